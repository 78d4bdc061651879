"""The GPU performance model (issue 10): the SASS interpreter on small kernels with known
counts, its agreement with the H100's measured instruction counts, and the budgets of
today's kernels, so that a change that makes them slower on paper fails CI.

Needs NVRTC (the nvrtc extra) and nvdisasm/cuobjdump (the test extra); the memory half
needs the CPU emulator (g++).
"""

from __future__ import annotations

import numpy as np
import pytest

from gpuconv import _emulator
from gpuconv._backends.cuda import source as _cuda_source


def _missing() -> str | None:
    try:
        _cuda_source.Nvrtc()
    except OSError as error:
        return f"NVRTC is unavailable: {error}"
    from gpuconv._gpumodel import sass

    try:
        sass.find_tool("nvdisasm")
        sass.find_tool("cuobjdump")
    except sass.ToolMissing as error:
        return str(error)
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=str(_missing()))

LOOP_KERNEL = r"""
extern "C" __global__ void loop(const float* __restrict__ source, float* __restrict__ target,
                                int count, int diverge) {
    const int lane = threadIdx.x;
    const int trips = diverge ? lane % 4 + 1 : count;
    float sum = 0.0f;
#pragma unroll 1
    for (int i = 0; i < trips; ++i) {
        sum += source[i * 32 + lane];
        target[i * 32 + lane] = sum;
    }
}
"""


def _loop_program():
    from gpuconv._gpumodel import sass

    nvrtc = _cuda_source.Nvrtc()
    _, lowered, cubin = nvrtc.compile_cubin(LOOP_KERNEL, ["loop"], ("--gpu-architecture=sm_90",))
    return sass.parse(sass.disassemble(cubin)), lowered["loop"]


def _run_loop(program, name, count: int, diverge: int):
    from gpuconv._gpumodel import simt

    bank = bytearray(0x400)
    bank[0:4] = (32).to_bytes(4, "little")
    for offset, value, size in ((0x210, 1 << 40, 8), (0x218, 2 << 40, 8)):
        bank[offset : offset + size] = value.to_bytes(size, "little")
    bank[0x220:0x224] = count.to_bytes(4, "little")
    bank[0x224:0x228] = diverge.to_bytes(4, "little")
    indices = np.stack([np.arange(32), np.zeros(32, int), np.zeros(32, int)], axis=1)
    warp = simt.Warp(program, bytes(bank), indices, (0, 0, 0), np.ones(32, bool))
    return warp.run(program.entry(name))


def test_one_loop_kernel_counts_are_affine_in_the_trip_count_and_stores_land_right():
    program, name = _loop_program()
    runs = {n: _run_loop(program, name, n, 0) for n in (1, 2, 5, 9)}
    per_trip = runs[2].instructions - runs[1].instructions
    assert per_trip > 0
    for n, run in runs.items():
        assert run.instructions == runs[1].instructions + (n - 1) * per_trip
        stores = [a for a in run.accesses if a.store]
        assert len(stores) == n
        for i, access in enumerate(stores):
            assert access.lanes.all()
            expected = (2 << 40) + 4 * (i * 32 + np.arange(32))
            assert np.array_equal(access.addresses, expected)


def test_divergent_lanes_cost_the_warp_the_longest_trip():
    program, name = _loop_program()
    diverged = _run_loop(program, name, 0, 1)  # lanes run 1..4 trips
    stores = [a for a in diverged.accesses if a.store]
    assert [int(a.lanes.sum()) for a in stores] == [32, 24, 16, 8]
    # the loop body is issued 4 times, as for 4 uniform trips, plus the extra trip tests
    uniform = _run_loop(program, name, 4, 0)
    assert uniform.instructions <= diverged.instructions <= uniform.instructions + 16


BYTE_INSTRUCTIONS = """
        /*0000*/                   IDP.4A.U8.S8 R4, R1, R2, R3 ;
        /*0010*/                   IDP.4A.S8.S8 R5, R1, R2, R3 ;
        /*0020*/                   I2IP.U8.S32.SAT R6, R1, R3, RZ ;
        /*0030*/                   I2IP.U8.S32.SAT R7, R3, R2, R6 ;
        /*0040*/                   UPRMT UR5, UR1, 0x7604, UR2 ;
        /*0050*/                   F2IP.U8.F32.NTZ R8, R9, R10, R6 ;
        /*0060*/                   EXIT ;
"""


SWITCH_INSTRUCTIONS = """
        /*0000*/                   HFMA2.MMA R41, -RZ, RZ, 0, 1.370906829833984375e-06 ;
        /*0010*/                   LDC R12, c[0x2][R2] ;
        /*0020*/                   BRX R12 -0x30                      (*"BRANCH_TARGETS .L_x_1,.L_x_2"*);
.L_x_1:
        /*0030*/                   MOV R5, 0x1 ;
        /*0040*/                   EXIT ;
.L_x_2:
        /*0050*/                   MOV R5, 0x2 ;
        /*0060*/                   EXIT ;
"""


def test_a_switch_follows_its_jump_table_and_a_half_pair_constant_is_an_integer():
    """What the border rule's switch compiles to, which the edge warps run: LDC from
    constant bank 2 (the jump table, from the CUBIN) and BRX to a target per lane; and the
    HFMA2.MMA idiom that puts a small integer (a loop count, 23) in a register, the first
    immediate the high half."""
    import struct

    from gpuconv._gpumodel import sass, simt

    program = sass.parse(SWITCH_INSTRUCTIONS)
    indices = np.stack([np.arange(32), np.zeros(32, int), np.zeros(32, int)], axis=1)
    table = struct.pack("<II", 0x30, 0x50)  # function-relative addresses of the two cases
    warp = simt.Warp(program, bytes(0x400), indices, (0, 0, 0), np.ones(32, bool), None, table)
    warp.registers[2] = 4 * (np.arange(32) % 2)  # even lanes case 0, odd lanes case 1
    run = warp.run(0)
    assert np.all(warp.registers[41] == 23)
    assert np.array_equal(warp.registers[5], 1 + np.arange(32) % 2)
    assert run.instructions == 3 + 2 + 2  # the two cases issued one after the other


def test_the_byte_instructions_of_the_dp4a_kernel_compute_what_ptx_says():
    """dp4a (IDP.4A), cvt.pack.sat.u8.s32.b32 (I2IP), its fusion with cvt.rni.s32.f32
    (F2IP) and the uniform byte permute (UPRMT), the instructions of gpuconv_window_dp4a and
    gpuconv_box_packed, on values with every sign and overflow, ties, NaN and infinities."""
    from gpuconv._gpumodel import sass, simt

    program = sass.parse(BYTE_INSTRUCTIONS)
    indices = np.stack([np.arange(32), np.zeros(32, int), np.zeros(32, int)], axis=1)
    warp = simt.Warp(program, bytes(0x400), indices, (0, 0, 0), np.ones(32, bool))
    rng = np.random.default_rng(7)
    a = rng.integers(0, 2**32, 32, dtype=np.int64)
    b = rng.integers(0, 2**32, 32, dtype=np.int64)
    c = rng.integers(-400, 400, 32, dtype=np.int64)
    a[0], b[0], c[0] = 0x80FF7F01, 0xFF807F02, 256
    warp.registers[1], warp.registers[2], warp.registers[3] = a, b, c % 2**32
    warp.uniform[1], warp.uniform[2] = a, b
    floats = rng.uniform(-300, 300, (2, 32)).astype(np.float32)
    floats[:, :6] = [[2.5, 3.5, -0.5, np.nan, np.inf, 254.5], [0.5, -np.inf, 255.5, 1.5, 7, 0]]
    warp.registers[9], warp.registers[10] = (f.view(np.uint32).astype(np.int64) for f in floats)
    warp.run(0)

    def byte_values(x, signed):
        values = (x[:, None] >> (8 * np.arange(4))) & 0xFF
        return np.where(values >= 128, values - 256, values) if signed else values

    def signed32(x):
        return (x + 2**31) % 2**32 - 2**31

    unsigned_by_signed = (byte_values(a, False) * byte_values(b, True)).sum(1) + c
    signed_by_signed = (byte_values(a, True) * byte_values(b, True)).sum(1) + c
    assert np.array_equal(signed32(warp.registers[4]), unsigned_by_signed)
    assert np.array_equal(signed32(warp.registers[5]), signed_by_signed)
    low = np.clip(signed32(a), 0, 255) << 8 | np.clip(c, 0, 255)
    assert np.array_equal(warp.registers[6], low)
    packed = (low << 16 | np.clip(c, 0, 255) << 8 | np.clip(signed32(b), 0, 255)) % 2**32
    assert np.array_equal(warp.registers[7], packed)
    # PRMT d, a, selector, b: selector nibbles 0-3 pick a's bytes, 4-7 b's
    permuted = (b & 0xFF) | (a & 0xFF) << 8 | ((b >> 16) & 0xFF) << 16 | ((b >> 24) & 0xFF) << 24
    assert np.array_equal(warp.uniform[5], permuted)
    # F2IP: round half to even, NaN to 0, saturate to a byte; the packed word of R6 above
    levels = [np.clip(np.nan_to_num(np.rint(f.astype(np.float64))), 0, 255) for f in floats]
    fused = (low << 16 | levels[0].astype(np.int64) << 8 | levels[1].astype(np.int64)) % 2**32
    assert np.array_equal(warp.registers[8], fused)
    assert list(levels[0][:6]) == [2, 4, 0, 0, 255, 254] and list(levels[1][:6]) == [
        0,
        0,
        255,
        2,
        7,
        0,
    ]


def test_every_store_of_a_window_warp_writes_its_own_pixels_once():
    from gpuconv._gpumodel import instructions, model

    plan, launch = model.plan_and_launch(model.Case("sharpen", "uint8", 1))
    kernel = instructions.compiled(launch.source_file, launch.name_expression)
    bx, by = launch.grid[0] // 2, launch.grid[1] // 2
    run = instructions.run_warp(
        kernel, launch, (bx, by, 0), 0, instructions.memory(launch, plan.shape, np.uint8)
    )
    written = []
    for access in run.accesses:
        if access.store:
            for lane in np.flatnonzero(access.lanes):
                start = int(access.addresses[lane]) - instructions.OUTPUT_ADDRESS
                written += range(start, start + access.size)
    rows = int(launch.scalars[-1])
    vector = int(launch.name_expression.split(",")[-2])
    y0 = by * launch.block[1] * rows
    e0 = (bx * 32 + np.arange(32)) * vector
    width = plan.shape[1]
    expected = sorted(
        y * width + e + v for y in range(y0, y0 + rows) for e in e0.tolist() for v in range(vector)
    )
    assert sorted(written) == expected


def test_instruction_counts_agree_with_the_h100_measurements():
    from gpuconv._gpumodel import model

    results = [model.calibrate(entry) for entry in model.calibration()["cases"]]
    assert len(results) >= 10
    ratios = {r["path"] + " " + " ".join(r["options"]): r["ratio"] for r in results}
    assert all(0.75 <= ratio <= 1.25 for ratio in ratios.values()), ratios
    assert 0.93 <= float(np.median(list(ratios.values()))) <= 1.05, ratios


# Budgets of today's kernels at 8192 x 8192: warp instructions per pixel, global-load
# sectors per request. (Each about 5% above what the model predicts now; the 8-bit 3x3
# window kernels' were 0.86, 0.77 and 3.05 before their interior loop, then 0.70, 0.62 and
# 2.19 until gpuconv_window_dp4a: 0.242 grey, 0.756 RGB. The 8-bit kernels' sectors per
# request rose by 5-25 % when their border fill read the words inside the row whole: the
# memory count samples border blocks too, whose one-byte loads, one sector each, were most
# of their requests; the bytes are the same. The box kernels' rose again, to 16.5-16.8,
# when their edge lanes came to load as the middle threads do: fewer requests, 1-1.4 %
# fewer sectors.)
BUDGETS = {
    ("sharpen", "uint8", 1): (0.26, 7.2),
    ("sobel_x", "uint8", 1): (0.26, 7.2),
    ("small_blur", "uint8", 1): (0.58, 17.3),  # gpuconv_box_packed (gpuconv_box: 1.128)
    ("large_blur", "uint8", 1): (0.82, 17.6),  # gpuconv_box_packed (shared-memory: 7.87)
    ("sharpen", "float32", 1): (1.13, 14.4),
    ("sobel_x", "float32", 1): (1.04, 15.0),
    ("small_blur", "float32", 1): (0.60, 15.8),  # gpuconv_box_float (separable: 4.81)
    ("large_blur", "float32", 1): (0.79, 14.3),  # gpuconv_box_float (separable: 7.62)
    ("small_blur", "uint8", 3): (2.07, 17.6),  # gpuconv_box_packed (shared-memory: 15.35)
    # gpuconv_box_packed, V = 64, column sums in shared memory (shared-memory separable:
    # 23.6; its lanes' 16-byte loads lie 64 bytes apart: half a sector each, L1 the rest)
    ("large_blur", "uint8", 3): (1.77, 22.9),
    ("sharpen", "uint8", 3): (0.80, 7.8),
    ("sobel_x", "uint8", 3): (0.80, 7.8),  # the colour 3 x 3 dp4a kernel
}


@pytest.mark.slow
@pytest.mark.skipif(_emulator.available() is not None, reason=str(_emulator.available()))
@pytest.mark.parametrize("kernel, dtype, channels", sorted(BUDGETS))
def test_todays_kernels_stay_within_their_budgets(kernel, dtype, channels):
    from gpuconv._gpumodel import model

    row = model.predict(model.Case(kernel, dtype, channels))
    instructions, sectors = BUDGETS[(kernel, dtype, channels)]
    assert row["warp_instructions_per_pixel"] <= instructions, row
    assert row["sectors_per_request"] <= sectors, row
    if channels == 1 or row["path"].startswith(("gpuconv_window", "gpuconv_box")):
        assert row["dram_bytes"] <= 1.1 * row["ideal_dram_bytes"], row
    assert 0 < row["fraction_of_copy"] <= 1.0
    assert row["predicted_ms"] >= row["copy_ms"]


@pytest.mark.slow
@pytest.mark.skipif(_emulator.available() is not None, reason=str(_emulator.available()))
@pytest.mark.parametrize(
    "kernel, dtype, channels, most",
    [
        ("sharpen", "uint8", 1, 0.40),
        ("small_blur", "uint8", 1, 0.02),
        ("large_blur", "uint8", 1, 0.02),
        ("small_blur", "uint8", 3, 0.02),
        ("large_blur", "uint8", 3, 1.0),
        ("large_blur", "float32", 1, 0.40),
    ],
)
def test_edge_warps_add_a_bounded_share_of_the_window_kernels_instructions(
    kernel, dtype, channels, most
):
    """The first and last column of blocks run the border rule for the threads at the row's
    ends, and their warps wait for them. Byte by byte over the whole window, with the
    border rule's modulo (the code before 2026-11-26 evening), they added 49 % (dp4a grey
    3 x 3) and 150 % (21-wide grey box) to the launch's instructions; reading the words
    inside the row whole, with the reflection near the row's ends, 35 % and 70 % (the
    21-wide RGB box, new then: 90 %). Since the night of 2026-11-26 the box kernels with column sums in
    registers read their edge lanes' windows as the middle threads' and replace the columns
    outside the row (gpuconv_box_packed_mirror): 0.3-1.1 %, so that their whole launches
    meet issue 10's targets too. The float32 box's fill, element by element through the
    border rule with its modulo and a one-element shift of the whole window, added 60 % to
    the 21-wide one; four elements at a time, those inside the row loaded directly, 30 %.
    Every case but the 21-wide RGB box (32 % of copy) meets its target for the whole
    launch. The runs also follow switch jump tables: BRXU, BRX and constant bank 2."""
    from gpuconv._gpumodel import model

    row = model.predict(model.Case(kernel, dtype, channels), edges=True)
    interior = row["warp_instructions_per_pixel"]
    assert 0 < row["edge_instructions_per_pixel"] <= most * interior, row
    assert row["fraction_of_copy_with_edges"] <= row["fraction_of_copy"]
    if (kernel, dtype, channels) != ("large_blur", "uint8", 3):
        # the whole launch, edge warps included, at issue 10's share of a copy
        assert row["fraction_of_copy_with_edges"] >= COPY_TARGETS[(kernel, dtype, channels)], row


# Issue 10's targets at 8192 x 8192 (fraction of a copy of the same bytes), each predicted
# met by the model.
COPY_TARGETS = {
    ("small_blur", "uint8", 1): 0.70,
    ("large_blur", "uint8", 1): 0.60,
    ("small_blur", "float32", 1): 0.70,
    ("large_blur", "float32", 1): 0.60,
    ("sharpen", "uint8", 1): 0.80,
    ("sobel_y", "uint8", 1): 0.80,
    ("laplacian", "float32", 1): 0.80,
    ("sharpen", "uint8", 3): 0.75,
    ("small_blur", "uint8", 3): 0.70,
    ("large_blur", "uint8", 3): 0.60,
}


@pytest.mark.slow
@pytest.mark.skipif(_emulator.available() is not None, reason=str(_emulator.available()))
@pytest.mark.parametrize("kernel, dtype, channels", sorted(COPY_TARGETS))
def test_kernels_are_predicted_at_issue_10s_share_of_a_copy(kernel, dtype, channels):
    from gpuconv._gpumodel import model

    row = model.predict(model.Case(kernel, dtype, channels))
    assert row["fraction_of_copy"] >= COPY_TARGETS[(kernel, dtype, channels)], row


@pytest.mark.skipif(_emulator.available() is not None, reason=str(_emulator.available()))
def test_one_channel_per_block_reads_and_writes_colour_images_three_times():
    from gpuconv._gpumodel import model

    row = model.predict(model.Case("sharpen", "uint8", 3, window=False))
    assert row["path"].startswith("gpuconv_direct")
    assert 2.5 <= row["dram_bytes"] / row["ideal_dram_bytes"] <= 3.5


def test_time_formula_takes_the_slower_of_bytes_and_instructions():
    from gpuconv._gpumodel import machine

    rate = machine.SMS * machine.ISSUE_PER_CLOCK * machine.CLOCK_HZ * machine.ISSUE_EFFICIENCY
    assert machine.issue_rate() == pytest.approx(rate)
    assert machine.predicted_seconds(3.0e12, 0) == pytest.approx(1.0)
    assert machine.predicted_seconds(0, rate) == pytest.approx(1.0)
    assert machine.predicted_seconds(3.0e12, 2 * rate) == pytest.approx(2.0)
    assert machine.copy_seconds(1.5e12) == pytest.approx(0.5)
    assert machine.occupancy(32, 256, 0) == 1.0
    assert machine.occupancy(128, 128, 0) == 0.25
    # Few resident warps cannot fill the issue slots: each issues every CYCLES cycles.
    cycles = machine.CYCLES_PER_WARP_INSTRUCTION
    few = machine.SMS * machine.CLOCK_HZ * 8 / cycles
    assert machine.issue_rate(8) == pytest.approx(few) and few < rate
    assert machine.issue_rate(64) == pytest.approx(rate)  # enough warps: the old rate
    assert machine.predicted_seconds(0, few, 8) == pytest.approx(1.0)
    assert machine.bound(0, few, 8) == "warps"
    assert machine.bound(0, few, 64) == "issue"
    assert machine.bound(3.0e12 * 2, few, 8) == "dram"
    # An SM holds what its occupancy allows, or its share of a small grid.
    assert machine.resident_warps(0.25, 10**6) == 16
    assert machine.resident_warps(0.25, 132 * 4) == 4


@pytest.mark.slow
@pytest.mark.skipif(_emulator.available() is not None, reason=str(_emulator.available()))
def test_predicted_times_agree_with_the_measured_h100_and_h200_kernel_times():
    """The model's one fitted constant is fitted to the H100's measured kernel times (the
    model's device) and agrees with the H200's, measured a day later on the same SMs."""
    from gpuconv._gpumodel import machine, model

    h100 = model.against_measured("H100")
    assert len(h100) >= 15  # window and shared-memory kernels, grey and colour
    assert model.fit_cycles_per_instruction(h100) == pytest.approx(
        machine.CYCLES_PER_WARP_INSTRUCTION, abs=0.15
    )
    ratios = {row["name"]: row["ratio"] for row in h100}
    assert all(0.7 <= ratio <= 1.45 for ratio in ratios.values()), ratios
    assert float(np.exp(np.mean(np.abs(np.log(list(ratios.values())))))) <= 1.15, ratios
    h200 = model.against_measured("H200")
    assert len(h200) >= 15
    assert abs(model.fit_cycles_per_instruction(h200) - machine.CYCLES_PER_WARP_INSTRUCTION) <= 1.0
    # Without the resident-warps term the register-heavy window kernels were predicted
    # 2-3x too fast: the uint8 3x3 one (as retuned, measured on the H200) is limited by
    # warps, not by DRAM or issue.
    uint8 = next(row for row in h200 if row["name"] == "sharpen-uint8-grey")
    assert uint8["bound"] == "warps" and uint8["other_limits_s"] * 1e3 < 0.6 * uint8["measured_ms"]


@pytest.mark.skipif(_emulator.available() is not None, reason=str(_emulator.available()))
def test_low_rank_path_is_two_separable_launches_plus_the_sums():
    from gpuconv._gpumodel import model
    from gpuconv.bench._inputs import difference_of_gaussians

    size = 512
    row = model.predict_lowrank(difference_of_gaussians(21), "float32", size)
    assert row["terms"] == 2
    assert row["path"].count("gpuconv_separable<float, float, float, 21, 21>") == 2
    # Each term reads the image and writes a float32 image; the sums add and store again.
    assert row["dram_bytes"] >= 2 * size * size * (4 + 4)
    assert row["predicted_ms"] > row["copy_ms"] > 0
    assert model.predict_lowrank(np.ones((21, 21)), "float32", size) is None  # rank 1


@pytest.mark.skipif(_emulator.available() is not None, reason=str(_emulator.available()))
def test_the_runtime_sized_separable_kernel_runs_through_the_sass_model():
    """A 25 x 25 difference of Gaussians (the H200's measured low-rank case) takes the
    run-time-sized separable kernel, whose loops leave a convergence barrier by BREAK: the
    model once stopped there (Unsupported), so the measured case had no prediction."""
    from gpuconv._gpumodel import model
    from gpuconv.bench._inputs import difference_of_gaussians

    row = model.predict_lowrank(difference_of_gaussians(25), "float32", 512)
    assert row["path"].count("gpuconv_separable<float, float, float, 0, 0>") == 2
    assert row["predicted_ms"] > row["copy_ms"] > 0


@pytest.mark.slow
@pytest.mark.skipif(_emulator.available() is not None, reason=str(_emulator.available()))
@pytest.mark.parametrize("kernel", ["sharpen", "small_blur"])
def test_float16_halves_the_bytes_per_pixel(kernel):
    from gpuconv._gpumodel import model

    # the same kernel family for both (float32 boxes have their own kernel since
    # gpuconv_box_float; float16 ones run the separable kernel)
    single = model.predict(model.Case(kernel, "float32", 1, float_box=False))
    half = model.predict(model.Case(kernel, "float16", 1))
    assert "gpuconv_half" in half["path"]
    assert half["ideal_dram_bytes"] * 2 == single["ideal_dram_bytes"]
    assert half["dram_bytes"] <= 0.55 * single["dram_bytes"], (half, single)
    if single["bound"] == "dram":  # the time follows the bytes
        assert half["predicted_ms"] <= 0.6 * single["predicted_ms"], (half, single)
