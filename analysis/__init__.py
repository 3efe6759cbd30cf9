"""Turns run directories (or a researcher's own table) into CBS measurements, fits, plots, reports."""
