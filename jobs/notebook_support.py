"""What the notebooks in ``notebooks/`` share: widgets, the Spark session, and showing results.

On Databricks a notebook's globals hold ``dbutils``, ``spark`` and ``display``; the notebooks pass
``globals()`` here and get real widgets. Run locally (``python notebooks/NAME.py``) there is no
``dbutils``: each widget takes its default, overridden by an environment variable
``LEANSCORE_WIDGET_<NAME>`` or by ``--name value`` / ``--name=value`` on the command line.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ENV_PREFIX = "LEANSCORE_WIDGET_"


def on_databricks(namespace: Mapping[str, Any]) -> bool:
    return namespace.get("dbutils") is not None


def widgets(
    namespace: Mapping[str, Any],
    defaults: Mapping[str, str],
    *,
    argv: Sequence[str] | None = None,
) -> dict[str, str]:
    """Declare one text widget per ``defaults`` entry and return the values (always strings)."""
    dbutils = namespace.get("dbutils")
    if dbutils is not None:
        for name, default in defaults.items():
            dbutils.widgets.text(name, default, name)
        return {name: dbutils.widgets.get(name) for name in defaults}

    values = dict(defaults)
    for name in defaults:
        env = os.environ.get(ENV_PREFIX + name.upper())
        if env is not None:
            values[name] = env
    values.update(_parse_argv(sys.argv[1:] if argv is None else argv, defaults))
    return values


def _parse_argv(argv: Sequence[str], defaults: Mapping[str, str]) -> dict[str, str]:
    found: dict[str, str] = {}
    args = list(argv)
    while args:
        arg = args.pop(0)
        if not arg.startswith("--"):
            raise ValueError(f"unexpected argument {arg!r}: give widgets as --name value")
        name, eq, value = arg[2:].partition("=")
        name = name.replace("-", "_")
        if name not in defaults:
            raise ValueError(
                f"unknown widget --{name}; this notebook's widgets are: "
                + ", ".join(f"--{n}" for n in defaults)
            )
        if not eq:
            if not args:
                raise ValueError(f"widget --{name} needs a value")
            value = args.pop(0)
        found[name] = value
    return found


def overrides(values: Mapping[str, str], keys: Mapping[str, str]) -> list[str]:
    """``--set`` overrides (``config.key=value``) for the widgets in ``keys`` that are not empty.

    ``keys`` maps a widget name to the config key it sets. The CLI's ``--set`` parser reads them,
    so a notebook and ``leanscore ... --set`` accept exactly the same values.
    """
    return [f"{key}={values[name]}" for name, key in keys.items() if values.get(name, "").strip()]


def notebook_spark(namespace: Mapping[str, Any], app_name: str):
    """The notebook's ``spark`` (Databricks, Connect), else the project's session builder."""
    spark = namespace.get("spark")
    if spark is not None:
        return spark
    from leanscore.jobs.runtime.spark import get_spark

    return get_spark(app_name)


def show(namespace: Mapping[str, Any], obj: Any, *, rows: int = 20) -> None:
    """``display`` on Databricks; a plain-text table (or figure note) locally."""
    display = namespace.get("display")
    if display is not None:
        display(obj)
        return
    if hasattr(obj, "toPandas"):  # a Spark DataFrame
        obj = obj.limit(rows).toPandas()
    if hasattr(obj, "savefig"):  # a matplotlib figure: locally it is saved by the caller
        print(f"[figure: {obj.get_suptitle() or 'chart'}]")
        return
    if hasattr(obj, "to_string"):
        print(obj.head(rows).to_string(index=False))
        return
    print(obj)


def location_overrides(prefix: str, path: str, table: str) -> list[str]:
    """Overrides pointing ``prefix`` (``input``/``output``) at a path or a catalog table.

    A config holds exactly one of ``path`` and ``table``; naming one clears the other.
    """
    if path.strip() and table.strip():
        raise ValueError(f"give {prefix}_path or {prefix}_table, not both")
    if table.strip():
        return [f"{prefix}.path=", f"{prefix}.table={table}"]
    if path.strip():
        return [f"{prefix}.table=", f"{prefix}.path={path}"]
    return []


def project_path(path: str) -> Path:
    """``path`` as given when it exists; otherwise relative to the project folder.

    Locally notebooks run from the project root; on Databricks the working directory is the
    notebook's own folder (``notebooks/``), so ``conf/...`` is found one level up.
    """
    candidate = Path(path)
    if candidate.is_absolute() or candidate.exists():
        return candidate
    for base in (Path.cwd().parent, Path(__file__).resolve().parent.parent):
        if (base / candidate).exists():
            return base / candidate
    return candidate  # load_config names the missing file


def set_overrides(text: str) -> list[str]:
    """The ``set`` widget: ``key=value`` overrides separated by ``;`` or new lines, exactly
    what ``leanscore ... --set key=value`` takes (``--set torch_model=`` clears a key)."""
    items = [s.strip() for s in text.replace("\n", ";").split(";")]
    return [s for s in items if s]


def nightly_config(params: Mapping[str, str], config_model):
    """(config, run date) of a nightly job notebook from its widgets: ``config``, ``run_date``
    (empty: today), ``artifact``, ``input_path``/``input_table``, ``output_path``/
    ``output_table``, ``summary_path`` and ``set``, applied as the CLI's ``--set`` would."""
    import datetime as dt

    from leanscore.jobs.config import load_config
    from leanscore.jobs.score import parse_run_date

    run_date = parse_run_date(params["run_date"] or dt.date.today().isoformat())
    config = load_config(
        config_model,
        project_path(params["config"]),
        [
            *overrides(params, {"artifact": "artifact", "summary_path": "summary_path"}),
            *location_overrides("input", params["input_path"], params["input_table"]),
            *location_overrides("output", params["output_path"], params["output_table"]),
            *set_overrides(params["set"]),
        ],
    )
    return config, run_date
