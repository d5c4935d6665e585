"""loadbench.points: the order of targets and the repeat of disturbed groups,
with the measurements themselves stubbed out."""

import tempfile
import unittest
from unittest import mock

from loadbench import points, report
from loadbench.settings import Settings


class Order(unittest.TestCase):
    def test_rotated_each_round(self):
        self.assertEqual(points.target_order(1), ["cutover", "nginx", "haproxy", "direct"])
        self.assertEqual(points.target_order(2), ["nginx", "haproxy", "direct", "cutover"])
        self.assertEqual(points.target_order(5), points.target_order(1))


class FakeLab:
    def __init__(self, work):
        self.work = work

    def path(self, name):
        return self.work + "/" + name


class Group(unittest.TestCase):
    def run_group(self, states):
        """A group of 4 targets whose successive points come out in `states` (clean|dirty)."""
        with tempfile.TemporaryDirectory() as work:
            p = points.Points(Settings(), FakeLab(work), None)
            seq = iter(states)

            def point(rnd, target, proto, conns):
                r = {c: "0" for c in report.COLS}
                r.update(round=str(rnd), target=target, proto=proto, conns=str(conns), state=next(seq))
                p.rows.append(r)

            with mock.patch.object(p, "point", side_effect=point), \
                    mock.patch("loadbench.machine.wait_idle", return_value=15) as wait:
                p.group(1, "h1", 50, points.target_order(1))
            return p, wait.call_count

    def test_clean_group_measured_once(self):
        p, waits = self.run_group(["clean"] * 4)
        self.assertEqual((len(p.rows), p.repeats, p.idle_waits, waits), (4, 0, 0, 0))

    def test_one_dirty_point_repeats_the_whole_group(self):
        p, waits = self.run_group(["clean", "dirty", "clean", "clean"] + ["clean"] * 4)
        self.assertEqual((len(p.rows), p.repeats, p.idle_waits, waits), (4, 1, 15, 1))
        self.assertTrue(all(r["state"] == "clean" for r in p.rows))

    def test_kept_flagged_after_three_tries(self):
        p, waits = self.run_group(["dirty"] * 12)
        self.assertEqual((len(p.rows), p.repeats, waits), (4, 2, 2))
        self.assertTrue(all(r["state"] == "dirty" for r in p.rows))


if __name__ == "__main__":
    unittest.main()
