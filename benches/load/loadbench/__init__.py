"""The load benchmark's parts; benches/load/run.py puts them together.

settings  flags, environment variables and ports
tools     install or locate nginx, HAProxy, wrk, h2load, oha; build cutover
procs     start, pin, stop and clean up processes; ports; /proc sampling
conf      the proxy and backend configs, from the templates in conf/
points    the measured points, groups of points, flips under load
parse     parsing the tools' output (wrk, h2load, oha, strace, callgrind, /proc)
report    the table and the results files
diagnose  --profile, --syscalls and --callgrind
"""
