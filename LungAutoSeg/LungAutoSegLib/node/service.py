"""``lungautoseg serve`` and ``lungautoseg node status``."""
from __future__ import annotations

import datetime
import time
from pathlib import Path

from ..errors import InputError
from .config import load_config
from .journal import Journal
from .log import JsonLog
from .receiver import Receiver
from .spool import Spool
from .worker import Jobs

TICK_SECONDS = 0.5


def serve(config_path: Path) -> int:
    """Run until SIGTERM or Ctrl-C (both arrive as KeyboardInterrupt); a restart resumes."""
    config = load_config(config_path)
    log = JsonLog(config.log_file)
    spool = Spool(config.spool)
    journal = Journal(spool.journal_path)
    jobs = receiver = None
    try:
        jobs = Jobs(config, spool, journal, log)
        jobs.recover()
        receiver = Receiver(config, spool, journal, log)
        receiver.start()
        while True:
            jobs.tick()
            time.sleep(TICK_SECONDS)
    except KeyboardInterrupt:
        log("stopping")
        return 0
    finally:
        if receiver is not None:
            receiver.stop()
        if jobs is not None:
            jobs.close()
        journal.close()
        log.close()


def status(config_path: Path) -> str:
    """The journal as a table: one line per series, newest last, with the last reason."""
    config = load_config(config_path)
    path = config.spool / Spool.JOURNAL_NAME
    if not path.is_file():
        raise InputError(f"no journal at {path}: the node has not run with this configuration yet", config_path)
    journal = Journal(path)
    try:
        lines = [f"{'updated':19}  {'state':10}  {'instances':>9}  {'patient':16}  series / reason"]
        for row in journal.jobs():
            when = datetime.datetime.fromtimestamp(row["updated"]).strftime("%Y-%m-%d %H:%M:%S")
            reason = f"  ({row['reason']})" if row["reason"] and row["state"] != "sent" else ""
            lines.append(f"{when}  {row['state']:10}  {row['instances']:>9}  {row['patient_id'][:16]:16}  "
                         f"{row['series_uid']}{reason}")
        return "\n".join(lines)
    finally:
        journal.close()
