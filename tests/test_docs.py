"""docs/architecture.md stays true to the code: its state table is the one the machine is built from.

    python -m tests.test_docs     # rewrite the table in docs/architecture.md from core.position.TABLE
"""

from __future__ import annotations

import re
from pathlib import Path

from gatebot.core.position import table_markdown

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
BLOCK = re.compile(r"(<!-- state-table:begin -->\n)(.*?)(<!-- state-table:end -->)", re.DOTALL)


def documented_table() -> str:
    match = BLOCK.search(DOC.read_text())
    assert match, f"{DOC} has lost its state-table markers"
    return match.group(2)


def test_the_documented_state_table_is_the_code_table() -> None:
    assert documented_table().strip() == table_markdown().strip(), "run: python -m tests.test_docs"


if __name__ == "__main__":
    DOC.write_text(BLOCK.sub(lambda m: m.group(1) + table_markdown().strip() + "\n" + m.group(3), DOC.read_text()))
