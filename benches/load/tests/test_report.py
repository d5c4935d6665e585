"""loadbench.report: the medians, ratios and verdicts behind the table, and
the table itself against results files the old run.sh wrote."""

import math
import unittest
from pathlib import Path

from loadbench import parse, report

DATA = Path(__file__).resolve().parent / "data"
NAN = float("nan")


def row(rnd, target, proto="h1", conns=50, **values):
    r = {c: "0" for c in report.COLS}
    r.update(round=str(rnd), target=target, proto=proto, conns=str(conns), state="clean")
    r.update({k: str(v) for k, v in values.items()})
    return r


class Figures(unittest.TestCase):
    def test_median_leaves_out_nan(self):
        self.assertEqual(report.med([3.0, NAN, 1.0]), 2.0)
        self.assertEqual(report.med([1.0, 2.0, 9.0]), 2.0)
        self.assertTrue(math.isnan(report.med([NAN])))
        self.assertTrue(math.isnan(report.med([])))

    def test_format(self):
        self.assertEqual(report.fmt(NAN), "n/a")
        self.assertEqual(report.fmt(113588.4), "113588")
        self.assertEqual(report.fmt(999.994), "999.99")
        self.assertEqual(report.fmt(0.7), "0.70")
        self.assertEqual(report.fmt(0.7, 3), "0.700")
        self.assertEqual(report.fmt(21.46, 1), "21.5")


class Ratios(unittest.TestCase):
    def test_median_of_per_round_ratios_not_ratio_of_medians(self):
        # cutover 10, 30, 20 and nginx 10, 10, 40 req/s: per-round ratios 1, 3, 0.5
        rows = [row(1, "cutover", rps=10), row(1, "nginx", rps=10),
                row(2, "cutover", rps=30), row(2, "nginx", rps=10),
                row(3, "cutover", rps=20), row(3, "nginx", rps=40)]
        t = report.Table(rows, [], 5000)
        self.assertEqual(t.nginx_rounds[("h1", 50, "rps")], [1.0, 3.0, 0.5])
        self.assertEqual(t.verdict("h1", 50, "rps"), 1.0)  # the ratio of medians would be 20/10 = 2
        line = next(ln for ln in t.lines if "| req/s |" in ln)
        self.assertEqual(line, "| HTTP/1.1 c=50 | req/s | 20.00 | 10.00 | n/a | n/a | 1.00 | n/a | n/a |")

    def test_rounds_where_the_peer_is_missing_or_zero_are_left_out(self):
        val = report.index([row(1, "cutover", rps=10), row(1, "nginx", rps=0),
                            row(2, "cutover", rps=12), row(2, "nginx", rps=6), row(3, "cutover", rps=9)])
        self.assertEqual(report.per_round_ratios(val, ["1", "2", "3"], "h1", 50, "rps", "nginx"), [2.0])

    def test_rate_points_have_no_cpu_line_and_verdicts_need_the_point(self):
        rows = [row(1, t, "rate", 256, rps=5000, p99=1) for t in report.TARGETS]
        t = report.Table(rows, [], 5000)
        self.assertFalse(any("CPU" in ln and "fixed" in ln for ln in t.lines))
        self.assertEqual(t.verdict("rate", 256, "p99"), 1.0)
        self.assertIsNone(t.verdict("h1", 50, "rps"))
        self.assertEqual([x for x in t.targets() if x.startswith("HTTP/1.1")], [])

    def test_peak_rss_is_the_max_of_a_round(self):
        rows = [row(1, "cutover", rss_kb=10240), row(1, "cutover", conns=256, rss_kb=20480),
                row(1, "nginx", rss_kb=10240), row(1, "nginx", conns=256, rss_kb=10240),
                row(1, "haproxy", rss_kb=5120)]
        t = report.Table(rows, [], 5000)
        self.assertEqual(t.rss_ratio("nginx"), 2.0)
        self.assertEqual(t.rss_line(), "| all | peak RSS MiB | 20.0 | 10.0 | 5.0 | n/a | 2.00 | 4.00 | n/a |")
        self.assertIn("peak RSS cutover/nginx 2.00 (target <= 2: met)", t.targets())


class PointRow(unittest.TestCase):
    def test_row_from_recorded_wrk_output(self):
        r = parse.parse_wrk((DATA / "wrk-c50.txt").read_text())
        cpu0 = {"cpu": [0, 0, 1000, 10]}
        cpu1 = {"cpu": [0, 0, 1800, 14]}  # 800 ticks of 2 CPUs: 400 of one; 4 stolen: 1%
        got = report.point_row(1, "cutover", "h1", 50, r, proxy_ticks=114, cpu0=cpu0, cpu1=cpu1,
                               foreign=60, wall=4.0, new_upstream=2, rss_kb=19352, hz=100, foreign_max=10)
        # 114 ticks = 1.14 s over 44353 requests; 60 ticks in 4 s = 15% of a core: dirty
        self.assertEqual(report.tsv_line(got), "\t".join(
            ["1", "cutover", "h1", "50", "14681.9", "1.860", "20.010", "44353", "0", "25.70", "2", "19352",
             "15.0", "1.0", "dirty"]))

    def test_direct_has_no_cpu_per_request(self):
        r = parse.parse_wrk((DATA / "wrk-non2xx.txt").read_text())
        s = {"cpu": [0, 0, 0, 0]}
        got = report.point_row(2, "direct", "h1", 10, r, 5, s, s, 0, 1.0, 11, 0, 100, 10)
        self.assertEqual((got["cpu_us_req"], got["errors"], got["state"]), ("nan", "6323", "clean"))

    def test_show(self):
        got = report.point_row(1, "nginx", "h2", 256, {"rps": 7270.7, "p50": 32.404, "p99": 105.544, "req": 1,
                                                        "sockerr": 0, "non2xx": 0},
                               0, {"cpu": [0, 0, 0, 0]}, {"cpu": [0, 0, 0, 0]}, 0, 1.0, 38, 0, 100, 10)
        self.assertEqual(report.show_point(got),
                         "  r1 nginx    h2 c=256      7270.7 req/s  p50 32.404 ms  p99 105.544 ms  cpu 0.00 us/req"
                         "  errors 0  new upstream conns 38  foreign cpu 0.0%  clean")


class AgainstRunSh(unittest.TestCase):
    """The table, notes and targets of results files written by run.sh,
    rebuilt from their .points.tsv (and flips.tsv where it was kept)."""

    def check(self, name, flips):
        md = (DATA / (name + ".md")).read_text()
        rows = report.read_points(DATA / (name + ".points.tsv"))
        head = md[:md.index("\n| test |")]
        if flips is None:  # flips not kept: compare all but the flip lines
            t = report.Table(rows, [], 5000)
            lines = md.splitlines()
            for ln in t.lines + ["- " + n for n in t.notes()] + ["- " + x for x in t.targets()]:
                self.assertIn(ln, lines)
            table = [ln for ln in lines if ln.startswith("|") and "flip" not in ln]
            self.assertEqual(table, t.lines)
        else:
            self.assertEqual(report.render(head, rows, report.read_flips(DATA / flips), 5000), md)

    def test_full_run_five_rounds(self):
        self.check("a1f6437-5-rounds", None)

    def test_quick_run_with_flips(self):
        self.check("shape-before-run.sh-quick", "shape-before-run.sh-quick.flips.tsv")


class Tls(unittest.TestCase):
    def rows(self):
        out = []
        for rd, (c_rps, n_rps) in enumerate([(900, 1000), (1100, 1000), (1000, 1000)], start=1):
            out += [row(rd, "cutover", "tls-h1", 50, rps=c_rps, cpu_us_req=20, rss_kb=1024),
                    row(rd, "nginx", "tls-h1", 50, rps=n_rps, cpu_us_req=25, rss_kb=1024),
                    row(rd, "cutover", "hs-rsa", 100, rps=400, cpu_us_req=1000, rss_kb=1024),
                    row(rd, "nginx", "hs-rsa", 100, rps=500, cpu_us_req=1200, rss_kb=1024)]
        return out

    def test_handshake_rows_are_per_handshake_and_show_how_busy_the_proxy_was(self):
        text = report.render("# head\n", self.rows(), [], 5000, {"cutover": "TLSv1.3 X h2"})
        self.assertIn("| full handshakes RSA c=100 | handshakes/s | 400.00 | 500.00 | n/a | n/a | 0.80 |", text)
        self.assertIn("| full handshakes RSA c=100 | CPU µs/handshake | 1000 | 1200 | n/a | n/a | 0.83 |", text)
        # 400/s x 1000 µs = 40% of a core; nginx 500 x 1200 µs = 60%
        self.assertIn("| full handshakes RSA c=100 | proxy busy % of its core | 40 | 60 | n/a | n/a |", text)
        self.assertNotIn("full handshakes RSA c=100 | p99", text)
        self.assertIn("Negotiated over TLS (h2load): cutover TLSv1.3 X h2.", text)

    def test_tls_targets(self):
        text = report.render("# head\n", self.rows(), [], 5000, {})
        self.assertIn("Targets (issue 18, over TLS):", text)
        self.assertIn("- HTTP/1.1 over TLS c=50: throughput cutover/nginx 1.00 (rounds 0.90, 1.10, 1.00) "
                      "(target >= 1: met), CPU per request cutover/nginx 0.80 (rounds 0.80, 0.80, 0.80) "
                      "(target <= 1: met)", text)
        self.assertIn("- full handshakes RSA c=100: handshakes/s cutover/nginx 0.80 (rounds 0.80, 0.80, 0.80) "
                      "(target >= 1: NOT met), CPU per handshake cutover/nginx 0.83", text)


if __name__ == "__main__":
    unittest.main()
