"""The H100 SXM of the model (issue 10), with its constants in this one place.

    predicted = max(dram_bytes / DRAM_BYTES_PER_SECOND,
                    warp_instructions / (SMS * ISSUE_PER_CLOCK * CLOCK_HZ * ISSUE_EFFICIENCY))
    copy = ideal_dram_bytes / DRAM_BYTES_PER_SECOND;  fraction_of_copy = copy / predicted

A measured GPU may recalibrate them later, with the data shown (GPU-model.md). The model
knows no latency: a kernel whose few resident warps cannot keep enough loads in flight
runs slower than this predicts (GPU-model.md compares with the H100's measured times).
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
#: Registers and warps an SM holds (occupancy, reported beside the time).
REGISTERS_PER_SM = 65536
MAX_WARPS_PER_SM = 64
MAX_BLOCKS_PER_SM = 32
SHARED_BYTES_PER_SM = 228 * 1024
#: L2 size (bytes): data a block shares with one launched less than this far before it is
#: still there (the DRAM estimate of gpuconv._gpumodel.memory).
L2_BYTES = 50 * 2**20


def issue_rate() -> float:
    """Warp instructions per second the whole GPU issues."""
    return SMS * ISSUE_PER_CLOCK * CLOCK_HZ * ISSUE_EFFICIENCY


def predicted_seconds(dram_bytes: float, warp_instructions: float) -> float:
    """The issue's formula: the slower of moving the bytes and issuing the instructions."""
    return max(dram_bytes / DRAM_BYTES_PER_SECOND, warp_instructions / issue_rate())


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
