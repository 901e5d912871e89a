#!/usr/bin/env python3
"""Summarizes the spine runs (perf-reports/loadgen/spine.sh, loadgen
-scenario cluster) as the tables of perf-reports/spine.md: medians over
rounds, every round in brackets.

Usage: python3 perf-reports/loadgen/spine_table.py DIR   (perf-reports/loadgen/spine/COMMIT)
DIR holds KIND-TARGET[-rN].json with KIND lat10, lat1 or fan3 and TARGET
arqon, nats or arqon-n3.
"""
import glob, json, os, re, statistics, sys


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def load(d):
    runs = {}
    for f in sorted(glob.glob(os.path.join(d, '*.json'))):
        m = re.match(r'(lat10|lat1|fan3)-(arqon-n3|arqon-tenant|arqon|nats)(?:-r(\d+))?\.json$', os.path.basename(f))
        if not m:
            continue
        kind, tgt, rnd = m.groups()
        j = json.load(open(f))
        res = j['results']
        steps = res.get('steps') or []
        e = {'round': int(rnd or 0), 'load': j['machine'].get('loadavg_at_start', '?'), 'started': j.get('started')}
        if kind.startswith('lat'):
            if not steps:
                continue
            s = steps[0]
            e['sustained'] = s['sustained']
            e['published_per_s'] = s['published_per_s']
            e['srv'] = s['server_us_per_delivery']
            e['ldr'] = s['loader_us_per_delivery']
            e['roles'] = s.get('server_cpu_s_by_role', {})
            e['cpus'] = s.get('cpus', [])
            for n in s['nodes']:
                e[n['path']] = dict(n['latency'], frac=n['delivered_fraction'])
        else:
            e['sust'] = res.get('sustained_deliveries_per_s', 0)
            e['msgs'] = res.get('sustained_msgs_per_s', 0)
            e['srv'] = res.get('sustained_server_us_per_delivery')
            e['ldr'] = res.get('sustained_loader_us_per_delivery')
            best = [s for s in steps if s['sustained']]
            if best:
                b = best[-1]
                e['roles'] = b.get('server_cpu_s_by_role', {})
                e['p99'] = b['latency'].get('p99_us')
                e['cross_p99'] = med([n['latency']['p99_us'] for n in b['nodes'] if n['path'] == 'cross-node'])
        runs.setdefault((kind, tgt), []).append(e)
    return runs


def f(x, nd=0, scale=1.0):
    return '-' if x is None else f'{x / scale:.{nd}f}'


def rounds(es, get, nd=0, scale=1.0):
    vals = [get(e) for e in sorted(es, key=lambda e: e['round'])]
    return f(med(vals), nd, scale) + ' (' + ', '.join(f(v, nd, scale) for v in vals) + ')'


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else 'perf-reports/loadgen/spine'
    runs = load(d)
    tg = [t for t in ('arqon', 'arqon-tenant', 'nats') if any(k[1] == t for k in runs)]
    for kind in ('lat10', 'lat1'):
        if not any((kind, t) in runs for t in tg):
            continue
        subs = 10 if kind == 'lat10' else 1
        print(f'\n### {kind}: 2 nodes x {subs} subscriber(s), 1 publisher on node 0, 10,000 msgs/s paced, 10 s, every message timed (us; median (rounds))\n')
        print('| | ' + ' | '.join(t for t in tg if (kind, t) in runs) + ' |')
        print('| --- |' + ' ---: |' * sum(1 for t in tg if (kind, t) in runs))
        rows = []
        for path in ('cross-node', 'same-node'):
            for q, key in (('p50', 'p50_us'), ('p90', 'p90_us'), ('p99', 'p99_us'), ('p99.9', 'p99_9_us'), ('max', 'max_us')):
                rows.append((f'{path} {q}', lambda e, p=path, k=key: e.get(p, {}).get(k), 0))
            rows.append((f'{path} delivered within the step', lambda e, p=path: e.get(p, {}).get('frac'), 4))
        rows.append(('server CPU us per delivery (all processes)', lambda e: e['srv'], 2))
        rows.append(('loader CPU us per delivery', lambda e: e['ldr'], 2))
        rows.append(('server CPU s in 10 s: gateways', lambda e: e['roles'].get('gateway'), 2))
        rows.append(('server CPU s in 10 s: NATS', lambda e: e['roles'].get('nats'), 2))
        for label, get, nd in rows:
            cells = [rounds(runs[(kind, t)], get, nd) for t in tg if (kind, t) in runs]
            print(f'| {label} | ' + ' | '.join(cells) + ' |')
        if (kind, 'nats') in runs:
            for t in tg:
                if t == 'nats' or (kind, t) not in runs:
                    continue
                for path in ('cross-node', 'same-node'):
                    for q in ('p50_us', 'p99_us'):
                        a = med([e.get(path, {}).get(q) for e in runs[(kind, t)]])
                        n = med([e.get(path, {}).get(q) for e in runs[(kind, 'nats')]])
                        if a and n:
                            print(f'\n{kind} {path} {q[:-3]} {t}/nats: {a / n:.2f}x', end='')
            print()
        for t in tg:
            if (kind, t) in runs:
                print(f'\n{kind}-{t} load average at start: ' + '; '.join(e['load'] for e in sorted(runs[(kind, t)], key=lambda e: e['round'])), end='')
        print()
    tg3 = [t for t in ('arqon', 'arqon-tenant', 'nats', 'arqon-n3') if ('fan3', t) in runs]
    if tg3:
        print('\n### fan3: 3 nodes x 1,000 subscribers, 1 publisher on node 0, paced, one message per frame (median (rounds))\n')
        print('| | ' + ' | '.join(tg3) + ' |')
        print('| --- |' + ' ---: |' * len(tg3))
        for label, get, nd, sc in (
                ('sustained deliveries/s, millions', lambda e: e['sust'], 2, 1e6),
                ('sustained msgs/s', lambda e: e['msgs'], 0, 1),
                ('server CPU us per delivery at that rate', lambda e: e['srv'], 3, 1),
                ('loader CPU us per delivery at that rate', lambda e: e['ldr'], 3, 1),
                ('p99 ms at that rate (all nodes)', lambda e: e.get('p99'), 1, 1000),
                ('p99 ms at that rate (cross-node nodes)', lambda e: e.get('cross_p99'), 1, 1000),
                ('gateways CPU s in the 5 s step', lambda e: e.get('roles', {}).get('gateway'), 2, 1),
                ('NATS CPU s in the 5 s step', lambda e: e.get('roles', {}).get('nats'), 2, 1)):
            print(f'| {label} | ' + ' | '.join(rounds(runs[('fan3', t)], get, nd, sc) for t in tg3) + ' |')
        for t in tg3:
            if t != 'nats' and ('fan3', 'nats') in runs:
                a = med([e['sust'] for e in runs[('fan3', t)]])
                n = med([e['sust'] for e in runs[('fan3', 'nats')]])
                if n:
                    print(f'\nfan3 sustained {t}/nats: {a / n:.2f}x')
        for t in tg3:
            print(f'\nfan3-{t} load average at start: ' + '; '.join(e['load'] for e in sorted(runs[('fan3', t)], key=lambda e: e['round'])), end='')
        print()


if __name__ == '__main__':
    main()
