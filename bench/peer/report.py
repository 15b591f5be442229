#!/usr/bin/env python3
"""Prints the kvserve / llama.cpp table from the JSON files compare.sh collected."""
import glob
import json
import os
import sys

out, threads = sys.argv[1], sys.argv[2]
print(f"threads: {threads}")
print(f"{'model':28} {'test':8} {'llama.cpp tok/s':>16} {'kvserve tok/s':>14} {'ratio':>7}")
for path in sorted(glob.glob(os.path.join(out, "*.llama.json"))):
    name = os.path.basename(path)[: -len(".llama.json")]
    peer = json.load(open(path))
    kv_pp = json.load(open(os.path.join(out, name + ".kv_pp.json")))["results"][0]
    kv_tg = json.load(open(os.path.join(out, name + ".kv_tg.json")))["results"][0]
    for row in peer:
        if row.get("n_prompt", 0) > 0 and row.get("n_gen", 0) == 0:
            test, mine = f"pp{row['n_prompt']}", kv_pp["prefill_tokens_per_s"]
        elif row.get("n_gen", 0) > 0 and row.get("n_prompt", 0) == 0:
            test, mine = f"tg{row['n_gen']}", kv_tg["decode_tokens_per_s"]
        else:
            continue
        theirs = row["avg_ts"]
        print(f"{name:28} {test:8} {theirs:16.1f} {mine:14.1f} {mine / theirs:7.2f}")
