"""Training checkpoints survive a kill mid-write."""


def test_a_kill_during_a_checkpoint_write_leaves_the_previous_checkpoint_whole(tmp_path):
    """The trainer's own writer, killed with SIGKILL while torch.save is writing a 400 MB state."""
    import signal
    import subprocess
    import sys
    import time

    import torch

    from lungautoseg_train.checkpoints import load_checkpoint, save_checkpoint

    last = tmp_path / "last.pt"
    save_checkpoint(last, {"epoch": 1, "model": {"w": torch.ones(3)}})
    writer = subprocess.Popen([sys.executable, "-c", "import sys, torch; from pathlib import Path; "
                               "from lungautoseg_train.checkpoints import save_checkpoint; "
                               "save_checkpoint(Path(sys.argv[1]), {'epoch': 2, 'model': {'w': torch.zeros(10**8)}})",
                               str(last)])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and writer.poll() is None:
        partial = [p for p in tmp_path.glob(".last.pt.*") if p.stat().st_size > 1_000_000]
        if partial:
            writer.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    writer.wait()
    assert writer.returncode == -signal.SIGKILL and partial  # killed mid-write, a partial file on disk
    assert partial[0].stat().st_size < 4 * 10**8
    state = load_checkpoint(last)  # what --resume reads: the previous checkpoint, whole
    assert state["epoch"] == 1 and torch.equal(state["model"]["w"], torch.ones(3))
