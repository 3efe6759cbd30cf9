"""Writes a report as `report.md` (images beside it) and a self-contained `report.html`.

A report is a list of blocks rendered twice, so the two files always hold the same content:
("h1"|"h2"|"p"|"code", text), ("ul", items), ("table", header, rows), ("img", path, caption).
"""

import base64
import html
import os


def heading(text: str, level: int = 2) -> tuple:
  return (f"h{level}", text)


def paragraph(text: str) -> tuple:
  return ("p", text)


def items(lines: list[str]) -> tuple:
  """A bulleted list."""
  return ("ul", list(lines))


def code(text: str) -> tuple:
  return ("code", text)


def table(header: list[str], rows: list[list]) -> tuple:
  return ("table", header, [[_cell(v) for v in row] for row in rows])


def image(path: str, caption: str) -> tuple:
  return ("img", path, caption)


def _cell(value) -> str:
  if isinstance(value, float):
    if value != value:
      return "-"
    return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
  return str(value)


def to_markdown(blocks: list[tuple], out_dir: str) -> str:
  lines = []
  for block in blocks:
    kind = block[0]
    if kind.startswith("h"):
      lines += ["#" * int(kind[1]) + " " + block[1], ""]
    elif kind == "p":
      lines += [block[1], ""]
    elif kind == "code":
      lines += ["```", block[1], "```", ""]
    elif kind == "ul":
      lines += [f"- {item}" for item in block[1]] + [""]
    elif kind == "table":
      header, rows = block[1], block[2]
      lines.append("| " + " | ".join(header) + " |")
      lines.append("|" + "---|" * len(header))
      lines += ["| " + " | ".join(row) + " |" for row in rows]
      lines.append("")
    elif kind == "img":
      lines += [f"![{block[2]}]({os.path.relpath(block[1], out_dir)})", "", f"*{block[2]}*", ""]
  return "\n".join(lines)


def to_html(blocks: list[tuple], title: str) -> str:
  """One file with every image inlined as a data URI: it can be mailed or attached as it is."""
  body = []
  for block in blocks:
    kind = block[0]
    if kind.startswith("h"):
      body.append(f"<{kind}>{html.escape(block[1])}</{kind}>")
    elif kind == "p":
      body.append(f"<p>{html.escape(block[1])}</p>")
    elif kind == "ul":
      body.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in block[1]) + "</ul>")
    elif kind == "code":
      body.append(f"<pre><code>{html.escape(block[1])}</code></pre>")
    elif kind == "table":
      head = "".join(f"<th>{html.escape(h)}</th>" for h in block[1])
      rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in block[2]
      )
      body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    elif kind == "img":
      with open(block[1], "rb") as f:
        data = base64.b64encode(f.read()).decode("ascii")
      body.append(
        f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(block[2])}">'
        f"<figcaption>{html.escape(block[2])}</figcaption></figure>"
      )
  style = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px;"
    "text-align:right}img{max-width:100%}pre{background:#f4f4f4;padding:8px;overflow-x:auto}"
  )
  return (
    f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
    f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
  )


def write(blocks: list[tuple], out_dir: str, title: str) -> tuple[str, str]:
  """Writes report.md and report.html into out_dir; returns their paths."""
  os.makedirs(out_dir, exist_ok=True)
  md_path, html_path = os.path.join(out_dir, "report.md"), os.path.join(out_dir, "report.html")
  with open(md_path, "w") as f:
    f.write(to_markdown(blocks, out_dir))
  with open(html_path, "w") as f:
    f.write(to_html(blocks, title))
  return md_path, html_path
