"""Hand mutations of gpuconv_window_dp4a, gpuconv_box_packed (its column sums in registers,
its edge lanes, and in shared memory) and gpuconv_box_float (kernels_cuda/convolve_window.cu):
each applied in place, the tests that cover the three kernels run through the CPU emulator,
the file restored. Every mutation must make a test fail.

    make cuda-mutation   # or .venv/bin/python benchmarks/cuda_kernel_mutations.py; 20 minutes

Results: benchmarks/results/mutation-cuda-dp4a-box.md. Not part of `make test` (it rewrites
a source file while it runs). Exits 1 if any mutation survives.
"""

import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
path = ROOT / "kernels_cuda/convolve_window.cu"
original = path.read_text()
mutations = [
    (
        "taps_of: never a shifted word",
        "            high = p0 % 4 == 1;",
        "            high = false;",
    ),
    (
        "fill: a word inside the row read one word to the right",
        "word = *reinterpret_cast<const unsigned*>(row + first);",
        "word = *reinterpret_cast<const unsigned*>(row + first + 4);",
    ),
    (
        "fill: the bytes of a word outside the row in reverse order",
        "for (int b = 3; b >= 0; --b) {",
        "for (int b = 0; b <= 3; ++b) {",
    ),
    (
        "load: right halo word one word early",
        "reinterpret_cast<const unsigned*>(row + e0 + V);",
        "reinterpret_cast<const unsigned*>(row + e0 + V - 4);",
    ),
    (
        "dp4a step: first kernel row adds to the old ring",
        "high ? taps_high[i] : taps[i], i == 0 ? 0 : ring[slot][v]);",
        "high ? taps_high[i] : taps[i], ring[slot][v]);",
    ),
    (
        "two-word permute: third byte from the wrong word",
        "(p2 - 4 * a - (c > a ? shift_c - 4 : 0)) << 8);",
        "(p2 - 4 * a - (c > a ? shift_c : 0)) << 8);",
    ),
    (
        "packed box: leaving row added",
        "columns[2 * w] = leaving ? columns[2 * w] - low : columns[2 * w] + low;",
        "columns[2 * w] = leaving ? columns[2 * w] + low : columns[2 * w] + low;",
    ),
    (
        "packed box: high pair from the low bytes",
        "__byte_perm(window.words[w], 0u, 0x4342)",
        "__byte_perm(window.words[w], 0u, 0x4140)",
    ),
    (
        "packed box: colour running sum steps one element, not one pixel",
        "sums[v] = sums[v - C] + column(v + RADIUS * C) - column(v - (RADIUS + 1) * C);",
        "sums[v] = sums[v - 1] + column(v + RADIUS * C) - column(v - (RADIUS + 1) * C);",
    ),
    (
        "byte window: left halo words one word off",
        "reinterpret_cast<const unsigned*>(row + e0) - HALO;",
        "reinterpret_cast<const unsigned*>(row + e0) - 1;",
    ),
    (
        "packed box: entering row one row late",
        "y0 + r - anchor_y + min(i, kernel_height - 1);",
        "y0 + r - anchor_y + min(i, kernel_height);",
    ),
    (
        "float box: suffix sums leave out the block's first row",
        "for (int i = K - 2; i >= 0; --i) {",
        "for (int i = K - 2; i >= 1; --i) {",
    ),
    (
        "float box: prefix sum restarts every row",
        "prefix[v] = phase == 0 ? across.v[v] : prefix[v] + across.v[v];",
        "prefix[v] = across.v[v];",
    ),
    (
        "float box: shared part of the row one element short",
        "gpuconv_pairwise_sum<V - 1, K - V + 1>(window);",
        "gpuconv_pairwise_sum<V - 1, K - V>(window);",
    ),
    (
        "float box: right partial sums one element early",
        "right[v] = v == 1 ? window[K] : right[v - 1] + window[K - 1 + v];",
        "right[v] = v == 1 ? window[K] : right[v - 1] + window[K - 2 + v];",
    ),
    (
        "float box fill: border rule one element off",
        "gpuconv_near_source_index(start + k, width, border);",
        "gpuconv_near_source_index(start + k + 1, width, border);",
    ),
    (
        "float box fill: a group inside the row read one element late",
        "values[k] = gpuconv_to_acc<Acc>(row[start + k]);",
        "values[k] = gpuconv_to_acc<Acc>(row[start + k + (k == 3)]);",
    ),
    (
        "float box fill: groups shifted in by three, not four",
        "for (int w = WINDOW - 1; w >= 4; --w) window[w] = window[w - 4];",
        "for (int w = WINDOW - 1; w >= 4; --w) window[w] = window[w - 3];",
    ),
    (
        "packed box, shared column sums: leaving row's high pair taken from its low bytes",
        "__byte_perm(out.words[w], 0u, 0x4342)",
        "__byte_perm(out.words[w], 0u, 0x4140)",
    ),
    (
        "packed box, shared column sums: first row's second half read as its first",
        "load(piece, source, half * HALF + q);",
        "load(piece, source, q);",
    ),
    (
        "packed box, shared column sums: the piece left of the row loaded whole",
        "if (source != nullptr && vector_ok && start >= 0 && start + 16 <= row_elements)",
        "if (source != nullptr && vector_ok && start >= -16 && start + 16 <= row_elements)",
    ),
    (
        "packed box, shared column sums: entering row's pieces one piece late",
        "load(in, entering, p);",
        "load(in, entering, p + 1);",
    ),
    (
        "fill: reflect101 near the row's end one element off",
        "const int reflected = p < 0 ? -p : 2 * size - 2 - p;",
        "const int reflected = p < 0 ? -p : 2 * size - 1 - p;",
    ),
    (
        "packed box: a 16-element piece past the row's end stored whole",
        "const bool whole = PIECE == V ? full_store : vector_ok && e0 + v < row_elements;",
        "const bool whole = PIECE == V ? full_store : vector_ok && e0 + v < row_elements + 16;",
    ),
    (
        "packed box edge lanes: the row's end one pixel off",
        "const int origin = right ? SPAN * C - V : 0;",
        "const int origin = right ? SPAN * C - V + C : 0;",
    ),
    (
        "packed box edge lanes: a pixel left of the row's start rounded toward zero",
        "const int pixel = element >= 0 ? element / C : -((-element + C - 1) / C);  // floor",
        "const int pixel = element / C;",
    ),
    (
        "packed box edge lanes: the constant column one row short",
        "unsigned(kernel_height * (border_value & 0xff))",
        "unsigned((kernel_height - 1) * (border_value & 0xff))",
    ),
    (
        "packed box edge lanes: a repeated pair's high column from the wrong half",
        "(s0 % 2 ? 0x32 : 0x10) | (s1 % 2 ? 0x7600 : 0x5400)",
        "(s0 % 2 ? 0x32 : 0x10) | (s1 % 2 ? 0x5400 : 0x7600)",
    ),
    (
        "packed box edge lanes: the last column past the row's end left unreplaced",
        "constexpr int LAST = RIGHT ? (V + LEFT - 1 + B) / 2 : B / 2 - 1;",
        "constexpr int LAST = RIGHT ? (V + LEFT - 2 + B) / 2 : B / 2 - 1;",
    ),
    (
        "packed box edge lanes: the start's lane loads left of the image's first row",
        ": (left_lane && row >= 1) ||",
        ": (left_lane && row >= 0) ||",
    ),
    (
        "packed box edge lanes: the end's lane loads right of the image's last row",
        "(right_lane && row >= 0 && row < height - 1))",
        "(right_lane && row >= 0 && row < height))",
    ),
]
tests = [
    "tests/test_cuda_backend.py",
    "-k",
    "dp4a_kernel_is_exact or packed_box_kernel_is_exact or window_kernels_match"
    " or float_box_kernel_keeps or shared_memory_reads_every_piece",
]
# Names containing any argument only (all without arguments), for rerunning a few.
chosen = [m for m in mutations if not sys.argv[1:] or any(a in m[0] for a in sys.argv[1:])]
results = []
try:
    for name, old, new in chosen:
        assert original.count(old) >= 1, name
        path.write_text(original.replace(old, new, 1))
        began = time.time()
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-x",
                "-p",
                "no:cacheprovider",
                "-n",
                "2",
                *tests,
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, "GPUCONV_CUDA_EMULATOR": "1"},
        )
        caught = run.returncode != 0
        last = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr[-200:]
        results.append((name, caught, last, round(time.time() - began)))
        print(name, "CAUGHT" if caught else "SURVIVED", last, flush=True)
finally:
    path.write_text(original)
caught_all = all(caught for _, caught, _, _ in results)
print(f"{sum(caught for _, caught, _, _ in results)} of {len(results)} caught")
sys.exit(0 if caught_all and len(results) == len(chosen) else 1)
