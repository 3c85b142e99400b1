"""YAML that remembers where each mapping came from, and the error that names the file and line.

`load_yaml(path)` returns ordinary dicts and lists, except that every mapping is a `LinedDict`: `d.line` is the
line where the mapping starts and `d.key_lines[k]` the line of key `k` (1-based, as an editor shows them). The
collector's schemas (`reported.py`, `layouts.py`) use them so that a typo in a method name or a missing source
fails with `experiments/owl/reported.yaml:42: ...`. Duplicate keys, which PyYAML silently accepts, are errors.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import yaml

from repro.config import ConfigError


class LinedDict(dict):
    """A dict parsed from YAML that knows its own line and the line of each key."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.line: Optional[int] = None
        self.key_lines: dict = {}

    def line_of(self, key) -> Optional[int]:
        return self.key_lines.get(key, self.line)


class DataFileError(ConfigError):
    """A user mistake in a data file (reported numbers, table layouts, run records): file, line, field, value."""

    def __init__(self, path, line: Optional[int], field_name: str, value: Any, expected: str, hint: str = ""):
        self.path, self.line = str(path), line
        where = f"{path}:{line}" if line else str(path)
        super().__init__(field_name, value, expected, hint)
        body = self.args[0].replace("Invalid configuration: ", "", 1)
        self.args = (f"{where}: {body}",)

    def __str__(self) -> str:
        return self.args[0]


class _LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings are LinedDicts; a repeated key is an error, not a silent overwrite."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> LinedDict:
    loader.flatten_mapping(node)
    out = LinedDict()
    out.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in out:
            raise DataFileError(loader.name, line, str(key), key, "each key once per mapping",
                                f"It was already given on line {out.key_lines[key]}.")
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = line
    return out


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(path: str | Path) -> Any:
    """Parse one YAML file; a syntax error becomes a DataFileError with the line PyYAML points at."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(path, None, "file", str(path), "an existing YAML file")
    text = path.read_text()
    loader = _LineLoader(text)
    loader.name = str(path)
    try:
        return loader.get_single_data()
    except DataFileError:
        raise
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise DataFileError(path, mark.line + 1 if mark else None, "YAML", problem, "valid YAML syntax") from None
    finally:
        loader.dispose()
