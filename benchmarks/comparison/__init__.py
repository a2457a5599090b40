"""The parts of benchmarks/compare.py, one module per concept; compare.py builds the field and runs it.

contenders  what every contender does, and a stockstore store as one
baselines   the plain baselines, (a) to (d) in Redis and the raw SQL drivers, written without stockstore
measure     this process's peak RSS per step, the records' size, Redis memory
runner      the steps, timed and every read checked; the medians of repeats
sql_scale   SqlStore against the raw drivers, chunk by chunk as the tables grow (--sql-n, sql_scale.py)
main_job    stockstore bench's store step at two sizes (--main-job)
targets     the issue's targets: each ratio against its limit, met or not
report      what a comparison found, printed as aligned text or Markdown
"""
