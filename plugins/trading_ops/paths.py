"""Where the project's files are, wherever it is deployed (repo checkout or /opt/airflow)."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
INCLUDE_DIR = PROJECT_ROOT / "include"
SQL_DIR = INCLUDE_DIR / "sql"
CONFIG_DIR = INCLUDE_DIR / "config"
