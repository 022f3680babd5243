"""medclf.files.write_text: the file is the new text, its folder is made, and no temporary
file is left beside it."""

from __future__ import annotations

from medclf.files import write_text


def test_a_file_written_whole_replaces_the_old_one(tmp_path) -> None:
    path = tmp_path / "new" / "state.json"
    assert write_text(path, "old") == path
    write_text(path, "né")
    assert path.read_text(encoding="utf-8") == "né"
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.json"]
