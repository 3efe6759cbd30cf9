"""The defaults every config starts from; each knob is explained in `cbs/config/defaults.py`.

Config files start from `get_config()` and change what they need; `--config=configs/base.py`
runs the defaults themselves.
"""

from cbs.config.defaults import get_config

__all__ = ["get_config"]
