"""The H100 SXM of the model (issue 10), with its constants in this one place.

    predicted = max(dram_bytes / DRAM_BYTES_PER_SECOND, warp_instructions / issue_rate(resident))
    issue_rate(resident) = SMS * CLOCK_HZ * min(ISSUE_PER_CLOCK * ISSUE_EFFICIENCY,
                                                resident / CYCLES_PER_WARP_INSTRUCTION)
    copy = ideal_dram_bytes / DRAM_BYTES_PER_SECOND;  fraction_of_copy = copy / predicted

``resident`` is the warps an SM holds at once (the occupancy the registers and shared
memory allow, or fewer when the grid is small). The issue fixed the first three constants;
CYCLES_PER_WARP_INSTRUCTION was fitted afterwards to kernel times measured on an H100
(2026-11-25), the data and the fit shown in GPU-model.md (``gpu_model.py --measured``): one
warp issues an instruction only every ~12 cycles on average (it waits on its loads and on
the results of its own previous instructions), so an SM with fewer than ~37 resident warps
cannot fill its issue slots. Without that term the model predicted the register-heavy
window kernels 2-3x too fast.
"""

from __future__ import annotations

#: HBM3 bandwidth a streaming kernel reaches (bytes per second).
DRAM_BYTES_PER_SECOND = 3.0e12
#: Streaming multiprocessors of an H100 SXM5.
SMS = 132
#: Warp instructions each SM can issue per clock (4 schedulers).
ISSUE_PER_CLOCK = 4
#: Boost clock (Hz).
CLOCK_HZ = 1.98e9
#: Share of the issue slots an integer-heavy kernel fills.
ISSUE_EFFICIENCY = 0.75
#: Average cycles between two instructions of one warp (latency of its loads and of its
#: dependent arithmetic, as seen by the warp): fitted to the H100's measured kernel times
#: (``model.MEASURED_KERNEL_TIMES``; ``gpu_model.py --measured`` shows the fit). 12.4 until
#: the 8-bit 3x3 kernels were retuned on the H200: their H100 times, of another launch
#: configuration, left the fit, and the remaining kernels give 11.9.
CYCLES_PER_WARP_INSTRUCTION = 11.9
#: Registers and warps an SM holds (occupancy, reported beside the time).
REGISTERS_PER_SM = 65536
MAX_WARPS_PER_SM = 64
MAX_BLOCKS_PER_SM = 32
SHARED_BYTES_PER_SM = 228 * 1024
#: L2 size (bytes): data a block shares with one launched less than this far before it is
#: still there (the DRAM estimate of gpuconv._gpumodel.memory).
L2_BYTES = 50 * 2**20


def issue_rate(resident_warps: float | None = None) -> float:
    """Warp instructions per second the whole GPU issues, with ``resident_warps`` per SM
    (None: enough to fill every issue slot the efficiency allows)."""
    per_clock = ISSUE_PER_CLOCK * ISSUE_EFFICIENCY
    if resident_warps is not None:
        per_clock = min(per_clock, resident_warps / CYCLES_PER_WARP_INSTRUCTION)
    return SMS * per_clock * CLOCK_HZ


def resident_warps(occupancy_fraction: float, total_warps: int) -> float:
    """Warps an SM holds at once: what its occupancy allows, or the grid's share of them."""
    return min(occupancy_fraction * MAX_WARPS_PER_SM, total_warps / SMS)


def predicted_seconds(
    dram_bytes: float, warp_instructions: float, resident: float | None = None
) -> float:
    """The slower of moving the bytes and issuing the instructions (with ``resident`` warps
    per SM; None: the issue's original formula, every issue slot fillable)."""
    return max(dram_bytes / DRAM_BYTES_PER_SECOND, warp_instructions / issue_rate(resident))


def bound(dram_bytes: float, warp_instructions: float, resident: float | None = None) -> str:
    """Which limit sets the predicted time: ``dram``, ``issue``, or ``warps`` (too few
    resident warps to fill the issue slots)."""
    dram = dram_bytes / DRAM_BYTES_PER_SECOND
    issue = warp_instructions / issue_rate()
    warps = warp_instructions / issue_rate(resident)
    if dram >= warps:
        return "dram"
    return "warps" if warps > issue else "issue"


def copy_seconds(ideal_bytes: float) -> float:
    """A device-to-device copy of the same bytes (read the input once, write the output)."""
    return ideal_bytes / DRAM_BYTES_PER_SECOND


def occupancy(registers: int, threads_per_block: int, shared_bytes: int) -> float:
    """Resident warps per SM over the 64 it can hold (registers allocated by 8 per thread)."""
    warps = -(-threads_per_block // 32)
    per_warp = -(-max(registers, 1) * 32 // 256) * 256
    blocks = min(
        MAX_BLOCKS_PER_SM,
        REGISTERS_PER_SM // (per_warp * warps),
        MAX_WARPS_PER_SM // warps,
        SHARED_BYTES_PER_SM // (shared_bytes + 1024) if shared_bytes else MAX_BLOCKS_PER_SM,
    )
    return blocks * warps / MAX_WARPS_PER_SM
