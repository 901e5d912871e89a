#!/usr/bin/env python3
"""Summarizes paced fan-out runs (loadgen -scenario paced) as the markdown
table of perf-reports/gateway.md section 9: medians over rounds.

Usage: python3 perf-reports/loadgen/pfan_table.py DIR
DIR holds pfan{1k,10k,lat1k,lat100}-TARGET[-rN].json (run.sh writes the
names without -rN; repeated rounds add -r1, -r2, ...). TARGET is arqon,
nats, bare, or any other label (base: an earlier arq binary).
"""
import glob, json, os, re, statistics, sys

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

def load(d):
    runs = {}
    for f in sorted(glob.glob(os.path.join(d, 'pfan*.json'))):
        m = re.match(r'pfan(1k|10k|lat1k|lat100)-([a-z0-9]+?)(?:-r(\d+))?\.json$', os.path.basename(f))
        if not m:
            continue
        kind, tgt, _ = m.groups()
        j = json.load(open(f))
        res = j['results']
        steps = res.get('steps') or []
        e = {'load': j['machine'].get('loadavg_at_start', '?')}
        if kind in ('1k', '10k'):
            e['sust'] = res.get('sustained_deliveries_per_s', 0)
            e['srv'] = res.get('sustained_server_us_per_delivery')
            e['ldr'] = res.get('sustained_loader_us_per_delivery')
            for s in steps:
                if s['rate'] * res['subscribers_ready'] == 500_000:
                    e['srv500'] = s['server_us_per_delivery']
                    e['ldr500'] = s['loader_us_per_delivery']
                    e['p99_500'] = s['latency'].get('p99_us')
                    e['fw500'] = ((s.get('server') or {}).get('metrics') or {}).get('frames_per_write')
        elif steps:
            s = steps[0]
            e['p50'] = s['latency'].get('p50_us')
            e['p99'] = s['latency'].get('p99_us')
            e['srv'] = s['server_us_per_delivery']
            e['ldr'] = s['loader_us_per_delivery']
        runs.setdefault((kind, tgt), []).append(e)
    return runs

def fmt(x, scale=1, unit='', nd=2):
    return '-' if x is None else f'{x / scale:.{nd}f}{unit}'

def main():
    runs = load(sys.argv[1] if len(sys.argv) > 1 else 'perf-reports/loadgen')
    tgts = sorted({t for _, t in runs}, key=lambda t: ['arqon', 'base', 'nats', 'bare'].index(t) if t in ['arqon', 'base', 'nats', 'bare'] else 9)
    print('| | ' + ' | '.join(tgts) + ' |')
    print('| --- |' + ' ---: |' * len(tgts))
    def row(label, kind, key, scale=1, unit='', nd=2, all_=False):
        cells = []
        for t in tgts:
            es = runs.get((kind, t), [])
            v = med([e.get(key) for e in es])
            c = fmt(v, scale, unit, nd)
            if all_ and es:
                c += ' (' + ', '.join(fmt(e.get(key), scale, '', nd) for e in es) + ')'
            cells.append(c)
        print(f'| {label} | ' + ' | '.join(cells) + ' |')
    row('1k subscribers: sustained deliveries/s (rounds)', '1k', 'sust', 1e6, 'M', 2, True)
    row('1k: server CPU us per delivery at that rate', '1k', 'srv', 1, '', 3)
    row('1k: loader CPU us per delivery at that rate', '1k', 'ldr', 1, '', 3)
    row('1k at 500k deliveries/s: server CPU us per delivery (rounds)', '1k', 'srv500', 1, '', 3, True)
    row('1k at 500k deliveries/s: loader CPU us per delivery', '1k', 'ldr500', 1, '', 3)
    row('1k at 500k deliveries/s: frames per writev', '1k', 'fw500', 1, '', 1)
    row('1k at 500k deliveries/s: p99 ms', '1k', 'p99_500', 1e3, '', 1)
    row('10k subscribers: sustained deliveries/s (rounds)', '10k', 'sust', 1e6, 'M', 2, True)
    row('10k: server CPU us per delivery at that rate', '10k', 'srv', 1, '', 3)
    row('10k: loader CPU us per delivery at that rate', '10k', 'ldr', 1, '', 3)
    row('1k subs x 100 msgs/s: p50 ms', 'lat1k', 'p50', 1e3, '', 2)
    row('1k subs x 100 msgs/s: p99 ms (rounds)', 'lat1k', 'p99', 1e3, '', 1, True)
    row('1k subs x 100 msgs/s: server CPU us per delivery', 'lat1k', 'srv', 1, '', 2)
    row('1k subs x 100 msgs/s: loader CPU us per delivery', 'lat1k', 'ldr', 1, '', 2)
    row('100 subs x 1k msgs/s: p50 ms', 'lat100', 'p50', 1e3, '', 2)
    row('100 subs x 1k msgs/s: p99 ms (rounds)', 'lat100', 'p99', 1e3, '', 1, True)
    loads = sorted({e['load'] for es in runs.values() for e in es})
    print(f'\nload average at the runs\' start: {loads[0]} ... {loads[-1]}' if loads else '')

main()
