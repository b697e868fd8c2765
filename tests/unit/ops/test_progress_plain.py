"""The plain progress line printed where stdout is not a terminal (Ray job logs, CI, logs --follow)."""
import io
import queue

from pipeline.train.progress import PlainLine, follow


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_plain_line_reports_step_losses_rate_and_eta_from_the_step_rate():
    clock, out = Clock(), io.StringIO()
    line = PlainLine(total=1000, out=out, clock=clock)
    clock.t += 30  # worker start-up: must not count in the ETA
    first = line.show({"step": 10, "loss/d": 1.2345, "loss/g": 0.5, "samples_per_s": 412.4})
    assert first == "step 10/1000 (1%)  D 1.234  G 0.500  412 img/s  elapsed 0:00:30  ETA ?"
    clock.t += 20  # 90 more steps in 20 s: 990 - 90 = 900 steps left at 4.5 steps/s = 200 s
    second = line.show({"step": 100, "loss/d": 1.0, "loss/g": 2.0, "samples_per_s": 400})
    assert second.endswith("elapsed 0:00:50  ETA 0:03:20"), second
    assert out.getvalue().splitlines() == [first, second]


def test_follow_prints_one_plain_line_per_report_when_stdout_is_not_a_terminal():
    q = queue.Queue()
    for step in (10, 20, 30):
        q.put({"step": step, "loss/d": 1.0, "loss/g": 1.0, "samples_per_s": 50})
    out = io.StringIO()  # isatty() is False, as for a Ray job's log file
    follow(q, total=30, alive=lambda: False, out=out)
    lines = out.getvalue().splitlines()
    assert [ln.split()[1] for ln in lines] == ["10/30", "20/30", "30/30"]
    assert all("D 1.000  G 1.000  50 img/s" in ln for ln in lines)
