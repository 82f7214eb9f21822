"""The import direction of DESIGN.md, checked on the source.

cli -> daemon -> pipeline.ingest -> pipeline.{fetch,parse,clean,dedupe} -> models;
stages never import config, store, daemon or each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "ingestd"
STAGES = ("fetch", "netguard", "parse", "fastparse", "jsonfeed", "xmlsafe", "clean", "dedupe")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {m for m in found if m.startswith("ingestd")}


def _module_files(prefix: str) -> list[Path]:
    target = PKG / prefix.replace(".", "/")
    files = list(target.rglob("*.py")) if target.is_dir() else [target.with_suffix(".py")]
    return [f for f in files if f.exists()]


def _stage_of(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) >= 3 and parts[1] == "pipeline" and parts[2] in STAGES:
        return parts[2]
    return None


def test_stages_import_only_models_and_exceptions() -> None:
    checked = 0
    for stage in STAGES:
        for path in _module_files(f"pipeline.{stage}"):
            checked += 1
            for mod in _imports(path):
                other = _stage_of(mod)
                if other is not None:
                    families = ({"fetch", "netguard"}, {"parse", "fastparse", "jsonfeed", "xmlsafe"})
                    same_family = any({stage, other} <= family for family in families)
                    assert other == stage or same_family, f"{path.name} imports stage {mod}"
                    continue
                assert mod == "ingestd" or mod.split(".")[1] in {
                    "models",
                    "exceptions",
                    "pipeline",
                    "__version__",
                }, f"{path.relative_to(PKG)} imports {mod}"
                assert not mod.startswith(
                    ("ingestd.config", "ingestd.store", "ingestd.daemon", "ingestd.cli")
                )
    assert checked >= 4


def test_models_import_nothing_of_ours() -> None:
    assert _imports(PKG / "models.py") == set()


def test_store_does_not_import_pipeline_or_daemon() -> None:
    for path in _module_files("store"):
        for mod in _imports(path):
            assert not mod.startswith(
                ("ingestd.pipeline", "ingestd.daemon", "ingestd.cli", "ingestd.config")
            ), f"{path.name} imports {mod}"


def test_pipeline_does_not_import_daemon_cli_or_config() -> None:
    for path in _module_files("pipeline"):
        for mod in _imports(path):
            assert not mod.startswith(("ingestd.daemon", "ingestd.cli", "ingestd.config", "ingestd.store")), (
                f"{path.name} imports {mod}"
            )


def test_daemon_does_not_import_cli() -> None:
    for path in _module_files("daemon"):
        assert not any(m.startswith("ingestd.cli") for m in _imports(path)), path.name


def test_the_daemon_process_does_not_load_the_parser_and_cleaner() -> None:
    """Parsing and cleaning run in workers; their libraries (~20 MB) stay out of the main process."""
    import subprocess
    import sys

    code = (
        "import sys, ingestd.cli, ingestd.daemon.service, ingestd.pipeline.ingest, ingestd.store\n"
        "print(' '.join(m for m in ('feedparser', 'lxml', 'nh3', 'py3langid', 'trafilatura',"
        " 'prometheus_client', 'numpy', 'alembic') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
