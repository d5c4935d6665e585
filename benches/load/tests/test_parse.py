"""loadbench.parse on output recorded from the tools on this project's
benchmark machine (tests/data/; README.md there says where each file came from).

Run: python3 -m unittest discover -s benches/load/tests -t benches/load
"""

import math
import unittest
from pathlib import Path

from loadbench import diagnose, parse

DATA = Path(__file__).resolve().parent / "data"


def data(name):
    return (DATA / name).read_text()


class Wrk(unittest.TestCase):
    def test_clean_run(self):
        r = parse.parse_wrk(data("wrk-c50.txt"))
        self.assertEqual(r, {"rps": 14681.87, "p50": 1.86, "p99": 20.01, "req": 44353, "sockerr": 0, "non2xx": 0})

    def test_socket_errors_add_up(self):
        r = parse.parse_wrk(data("wrk-flip-socket-errors.txt"))
        self.assertEqual((r["req"], r["sockerr"], r["non2xx"]), (44605, 445, 0))

    def test_non2xx_and_microsecond_percentile(self):
        r = parse.parse_wrk(data("wrk-non2xx.txt"))
        self.assertEqual((r["req"], r["non2xx"]), (10060, 6323))
        self.assertAlmostEqual(r["p50"], 0.588)  # "588.00us"
        self.assertAlmostEqual(r["p99"], 21.32)

    def test_nothing_printed(self):
        r = parse.parse_wrk("")
        self.assertEqual((r["rps"], r["req"], r["sockerr"], r["non2xx"]), (0.0, 0, 0, 0))
        self.assertTrue(math.isnan(r["p50"]) and math.isnan(r["p99"]))

    def test_units(self):
        self.assertEqual(parse.ms("812.00", "us"), 0.812)
        self.assertEqual(parse.ms("2", "s"), 2000.0)
        self.assertEqual(parse.ms("1", "m"), 60000.0)


class H2load(unittest.TestCase):
    def test_summary_and_log(self):
        r = parse.parse_h2load(data("h2load-n2000.txt"), data("h2load-n2000.txt.log"))
        self.assertEqual((r["rps"], r["req"], r["sockerr"], r["non2xx"]), (16573.99, 2000, 0, 0))
        self.assertAlmostEqual(r["p50"], 1.149)
        self.assertAlmostEqual(r["p99"], 3.067)

    def test_log_agrees_with_the_summary(self):
        # h2load's own "time for request: min 57us max 3.44ms" over the same requests
        lat = parse.h2load_latencies(data("h2load-n2000.txt.log"))
        self.assertEqual(len(lat), 2000)
        self.assertEqual(lat[0], 57)
        self.assertEqual(round(lat[-1] / 1000, 2), 3.44)

    def test_log_skips_requests_without_status(self):
        self.assertEqual(parse.h2load_latencies("1\t200\t30\n2\t-1\t99\n3\t502\t10\n"), [10, 30])

    def test_summary_without_log(self):
        r = parse.parse_h2load(data("h2load-c50.txt"))
        self.assertEqual((r["rps"], r["req"], r["sockerr"], r["non2xx"]), (9461.67, 28385, 0, 0))
        self.assertTrue(math.isnan(r["p50"]))

    def test_ok_count(self):
        self.assertEqual(parse.h2load_ok(data("h2load-h1-n20000.txt")), 20000)
        self.assertEqual(parse.h2load_ok(""), 0)

    def test_percentile_nearest_rank_below(self):
        self.assertEqual(parse.percentile_ms([1000, 2000, 3000, 4000], 0.5), 3.0)
        self.assertEqual(parse.percentile_ms([1000, 2000, 3000, 4000], 0.99), 4.0)
        self.assertTrue(math.isnan(parse.percentile_ms([], 0.5)))


class Oha(unittest.TestCase):
    def test_fixed_rate_run(self):
        r = parse.parse_oha(data("oha-rate.json"))
        # the same figures run.sh put in that point's row: 4993.8 req/s, p50 1.353, p99 8.833, 1 error
        self.assertEqual((r["req"], r["sockerr"], r["non2xx"]), (14991, 1, 0))
        self.assertAlmostEqual(r["rps"], 4993.7614971494695)
        self.assertAlmostEqual(r["p50"], 1.35252)
        self.assertAlmostEqual(r["p99"], 8.832729)

    def test_requests_aborted_at_the_deadline_are_errors(self):
        r = parse.parse_oha(data("oha-rate-deadline-errors.json"))
        self.assertEqual((r["req"], r["sockerr"], r["non2xx"]), (14985, 12, 0))

    def test_non2xx(self):
        r = parse.parse_oha(data("oha-non2xx.json"))
        self.assertEqual((r["req"], r["sockerr"], r["non2xx"]), (500, 0, 200))

    def test_not_json(self):
        r = parse.parse_oha("")
        self.assertEqual((r["rps"], r["req"]), (0.0, 0))
        self.assertTrue(math.isnan(r["p99"]))


class Strace(unittest.TestCase):
    def test_calls_add_up_to_the_total_line(self):
        calls = parse.strace_calls(data("strace-c-cutover.txt"))
        self.assertEqual(calls["recvfrom"], 40100)
        self.assertEqual(calls["writev"], 20000)
        self.assertNotIn("total", calls)
        self.assertEqual(sum(calls.values()), 81651)  # strace's own total

    def test_lines_as_run_sh_printed_them(self):
        """The same strace and h2load files gave these lines from run.sh --syscalls."""
        expected = data("syscalls-run.sh-output.txt").splitlines()[1:]
        for target, line in zip(("cutover", "nginx", "haproxy"), expected):
            ok = parse.h2load_ok(data({"cutover": "h2load-h1-n20000.txt"}.get(
                target, "h2load-h1-n20000-%s.txt" % target)))
            calls = parse.strace_calls(data("strace-c-%s.txt" % target))
            self.assertEqual(diagnose.syscall_line(target, "h1", ok, calls), line.rstrip("\n"))

    def test_no_successful_requests(self):
        self.assertEqual(diagnose.syscall_line("nginx", "h2", 0, {}), "nginx    h2    no successful requests")


class Callgrind(unittest.TestCase):
    def test_totals(self):
        self.assertEqual(parse.callgrind_totals(data("callgrind-dump-tail.txt")), 363589023)

    def test_functions_as_run_sh_printed_them(self):
        """callgrind_annotate of the same dump gave these lines from run.sh --callgrind."""
        lines = data("callgrind-run.sh-output.txt").splitlines()
        self.assertEqual("cutover: %.1f K" % (363589023 / 20000 / 1000), lines[0][:len("cutover: 18.2 K")])
        expected = [ln for ln in lines[2:] if not ln.startswith("[")]
        got = ["%8.0f  %s" % (c / 20000, name) for c, name in parse.callgrind_functions(data("callgrind-annotate.txt"))]
        self.assertEqual(got, expected)

    def test_scaffolding_left_out(self):
        names = [n for _, n in parse.callgrind_functions(data("callgrind-annotate.txt"))]
        self.assertFalse(any("below main" in n or "PROGRAM TOTALS" in n for n in names))


class Perf(unittest.TestCase):
    def test_lines_as_run_sh_printed_them(self):
        """perf report --children -g none of run.sh --profile's perf.data gave these lines."""
        expected = data("profile-run.sh-inclusive.txt").splitlines()[1:]
        self.assertEqual(parse.perf_top(data("perf-report-children.txt"), 60), expected)

    def test_no_report(self):
        self.assertEqual(parse.perf_top("# no samples\n", 40), [])


class Proc(unittest.TestCase):
    def test_pid_stat(self):
        st = parse.parse_pid_stat(data("proc-pid-stat-nginx-worker.txt"))
        self.assertEqual(st, {"ppid": 19605, "ticks": 3, "start": "72664"})

    def test_pid_stat_name_with_spaces_and_parentheses(self):
        st = parse.parse_pid_stat(data("proc-pid-stat-odd-name.txt"))  # comm "a) b (c"
        self.assertEqual(st, {"ppid": 19594, "ticks": 0, "start": "72784"})

    def test_vmhwm(self):
        self.assertEqual(parse.parse_vmhwm_kb(data("proc-pid-status-nginx-worker.txt")), 5544)
        self.assertEqual(parse.parse_vmhwm_kb(data("proc-pid-status-kthreadd.txt")), 0)

    def test_cpu_sample(self):
        s = parse.parse_cpu_sample(data("proc-stat-1.txt"))
        self.assertEqual(list(s), ["cpu", "cpu0", "cpu1"])
        # cpu0 45282 7408 10658 7949 65 0 1141 106: busy = user+nice+system+irq+softirq
        self.assertEqual(s["cpu0"], [64489, 8014, 72609, 106])
        self.assertEqual(parse.format_cpu_sample(s).splitlines()[1], "cpu0 64489 8014 72609 106")

    def test_idle_percent(self):
        a, b = parse.parse_cpu_sample(data("proc-stat-1.txt")), parse.parse_cpu_sample(data("proc-stat-2.txt"))
        self.assertEqual(parse.idle_percent(a, b, "cpu0"), 0.0)  # a busy second on this machine
        b2 = {"cpu0": [a["cpu0"][0] + 10, a["cpu0"][1] + 90, a["cpu0"][2] + 100, 0]}
        self.assertEqual(parse.idle_percent(a, b2, "cpu0"), 90.0)

    def test_foreign_ticks(self):
        before = {(1, "10"): 100, (2, "20"): 50}
        after = {(1, "10"): 130, (2, "20"): 50, (3, "99"): 7, (4, "5"): 1}
        # pid 3 started in between: counts whole; pid 4 too (not seen before)
        self.assertEqual(parse.foreign_ticks(before, after), 38)
        # a pid reused by a new process (other start time) counts whole, never negative
        self.assertEqual(parse.foreign_ticks({(1, "10"): 500}, {(1, "11"): 3}), 3)

    def test_stub_status(self):
        self.assertEqual(parse.stub_status_accepts(data("stub_status.txt")), 51)


class TlsBatches(unittest.TestCase):
    def test_batches_add_up_over_the_wall_time(self):
        r = parse.parse_h2load_batches(data("h2load-batches-hs-rsa-cutover.txt"))
        self.assertEqual((r["req"], r["sockerr"], r["non2xx"]), (1150, 0, 0))  # 23 runs of 50
        self.assertAlmostEqual(r["rps"], 1150 / 3.023665)
        self.assertTrue(math.isnan(r["p50"]) and math.isnan(r["p99"]))

    def test_no_batches_line_is_zero_rate(self):
        r = parse.parse_h2load_batches("requests: 50 total, 50 started, 50 done, 48 succeeded, 1 failed, "
                                       "1 errored, 0 timeout\nstatus codes: 48 2xx, 0 3xx, 0 4xx, 2 5xx\n")
        self.assertEqual((r["rps"], r["req"], r["sockerr"], r["non2xx"]), (0.0, 50, 2, 2))

    def test_negotiated(self):
        self.assertEqual(parse.h2load_tls(data("h2load-tls-h2-nginx.txt")),
                         "TLSv1.3 TLS_AES_256_GCM_SHA384 X25519 h2")
        self.assertEqual(parse.h2load_tls(data("h2load-c50.txt")), "h2c")  # cleartext: only the ALPN line


if __name__ == "__main__":
    unittest.main()
