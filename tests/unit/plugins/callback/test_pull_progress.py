"""The pull progress callback turns a progress file into one line."""

from ansible_collections.homelab.inference.plugins.callback.pull_progress import progress_line


def test_pull_progress_line(tmp_path):
    path = tmp_path / "qwen.json"
    path.write_text(
        '{"model": "qwen2.5:14b", "status": "pulling 6e4c38e1172f", "completed": 4070000000,'
        ' "total": 9000000000, "percent": 45.2, "done": false}'
    )
    assert progress_line(str(path)) == "pull qwen2.5:14b 45.2% 4.07/9.00 GB pulling 6e4c38e1172f"
    assert progress_line(str(tmp_path / "missing.json")) is None
