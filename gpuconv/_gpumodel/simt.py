"""Runs the control flow of one warp through SASS, counting the warp instructions it issues.

Not a GPU simulator: it executes the integer and predicate arithmetic that decides where
each thread goes (indices, loop counters, comparisons, the constant bank holding the
kernel's parameters, special registers such as ``threadIdx``) exactly, and the data too,
closely enough for data-dependent branches (the saturation of a float sum into uint8
branches on the value): global loads read what a :class:`Memory` says (the model serves
the real weights and a noise image like the benchmark's), shared memory is written and
read back (the warps of a block run barrier by barrier, :func:`run_block`), floating-point
instructions compute in float32 (transcendental ones with NumPy's rounding, not the GPU's).
``tests/test_gpu_model.py`` checks every store address of the model's warps against the
pixels they must write.

Divergence follows the SIMT rule of a stack-less GPU (Volta and later, with ``BSSY``/
``BSYNC`` convergence barriers): the warp issues the instruction at the lowest program
counter among its live threads, for the threads that are at it; threads that branched
ahead wait. For structured code this reconverges where the compiler's ``BSYNC`` does.
Every issued instruction counts once, predicated off or not, as ``smsp__inst_executed``
counts. An instruction it does not know raises :class:`Unsupported` naming it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .sass import Instruction, Operand, Program
from .sass import _operand as sass_operand

LANES = 32
_MASK = np.int64(0xFFFFFFFF)
_U32 = np.uint32


class Unsupported(RuntimeError):
    """The warp reached an instruction (or operand) the interpreter does not model."""


class Memory:
    """What loads return: global regions (each read through a function of the element
    index), one block's shared memory (written by ``STS``, read by ``LDS``) and nothing else
    (other global addresses read as 0).

    ``regions``: ``(base address, bytes, element size, reader)`` where ``reader`` maps an
    int64 array of element indices to their bit patterns.
    """

    def __init__(self, regions=(), shared_bytes: int = 0) -> None:
        self.regions = list(regions)
        self.shared = np.zeros(0x400 + shared_bytes + 64, dtype=np.uint8)

    def read_global(self, addresses: np.ndarray, width: int) -> np.ndarray:
        """The ``width`` bytes at each address, little-endian, as ``ceil(width / 4)`` words."""
        data = np.zeros((LANES, width), dtype=np.int64)
        for base, size, element, reader in self.regions:
            offsets = addresses - base
            inside = (offsets >= 0) & (offsets + width <= size)
            if not inside.any():
                continue
            for byte in range(width):
                position = offsets[inside] + byte
                bits = reader(position // element)
                data[inside, byte] = (bits >> (8 * (position % element))) & 0xFF
        return _words(data)

    def _shared_offsets(self, addresses: np.ndarray, width: int) -> np.ndarray:
        offsets = addresses[:, None] + np.arange(width)
        if (offsets < 0).any() or (offsets >= len(self.shared)).any():
            raise Unsupported("a shared-memory access outside the block's shared memory")
        return offsets

    def read_shared(self, addresses: np.ndarray, width: int) -> np.ndarray:
        return _words(self.shared[self._shared_offsets(addresses, width)].astype(np.int64))

    def write_shared(self, addresses, width: int, words: np.ndarray, lanes) -> None:
        offsets = self._shared_offsets(addresses[lanes], width)
        data = np.zeros((int(lanes.sum()), width), dtype=np.uint8)
        for byte in range(width):
            data[:, byte] = (words[byte // 4][lanes] >> (8 * (byte % 4))) & 0xFF
        self.shared[offsets] = data


def _words(data: np.ndarray) -> np.ndarray:
    """(32, width) bytes -> (ceil(width / 4), 32) little-endian words."""
    width = data.shape[1]
    words = np.zeros((max(1, -(-width // 4)), LANES), dtype=np.int64)
    for byte in range(width):
        words[byte // 4] |= data[:, byte] << (8 * (byte % 4))
    return words


@dataclass
class Access:
    """One global-memory instruction of the warp: which lanes, byte addresses, bytes each."""

    address: int  # SASS address of the instruction
    store: bool
    lanes: np.ndarray  # bool (32,)
    addresses: np.ndarray  # uint64 (32,)
    size: int


@dataclass
class WarpRun:
    instructions: int  # warp instructions issued
    by_opcode: dict[str, int] = field(default_factory=dict)
    accesses: list[Access] = field(default_factory=list)


def _wide(values) -> np.ndarray:
    return np.asarray(values, dtype=np.int64) & _MASK


def _float32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.int64) & _MASK).astype(np.uint32).view(np.float32)


def _bits(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float32).view(np.uint32).astype(np.int64)


class Warp:
    """The state of one warp: registers, predicates, program counters."""

    def __init__(
        self,
        program: Program,
        constants: bytes,
        thread_indices: np.ndarray,  # (32, 3) threadIdx of each lane
        block_index: tuple[int, int, int],
        live: np.ndarray,  # (32,) bool: lanes that are threads of the block
        memory: Memory | None = None,
        jump_tables: bytes = b"",  # constant bank 2 (switch tables, read by LDC for BRX)
    ) -> None:
        self.program = program
        self.constants = np.frombuffer(constants.ljust(0x1000, b"\0"), dtype=np.uint8)
        self.jump_tables = np.frombuffer(jump_tables.ljust(0x100, b"\0"), dtype=np.uint8)
        self.thread_indices = thread_indices
        self.block_index = block_index
        self.live = live.copy()
        self.registers = np.zeros((256, LANES), dtype=np.int64)
        self.uniform = np.zeros((64, LANES), dtype=np.int64)
        self.predicates = np.zeros((8, LANES), dtype=bool)
        self.predicates[7] = True
        self.uniform_predicates = np.zeros((8, LANES), dtype=bool)
        self.uniform_predicates[7] = True
        self.local: dict[int, np.ndarray] = {}
        self.accesses: list[Access] = []
        self.memory = memory if memory is not None else Memory()
        self.pcs = np.zeros(LANES, dtype=np.int64)
        self.issued = 0
        self.by_opcode: dict[str, int] = {}

    # ------------------------------------------------------------------ operands
    def _constant(self, operand: Operand, width: int = 4) -> np.ndarray:
        banks = {0: self.constants, 2: self.jump_tables}
        if operand.index not in banks:
            raise Unsupported(f"constant bank {operand.index} ({operand.text})")
        bank = banks[operand.index]
        offsets = np.full(LANES, operand.offset, dtype=np.int64)
        if operand.base is not None:
            offsets = offsets + self.read(operand.base)
        values = np.zeros(LANES, dtype=np.int64)
        for byte in range(width):
            index = np.clip(offsets + byte, 0, len(bank) - 1)
            values |= bank[index].astype(np.int64) << (8 * byte)
        return values

    def read(self, operand: Operand) -> np.ndarray:
        """The 32-bit value of a register, immediate or constant operand (no modifiers)."""
        if operand.kind == "r":
            if operand.bank == "R":
                return self.registers[operand.index] if operand.index != 255 else _zeros()
            return self.uniform[operand.index] if operand.index != 63 else _zeros()
        if operand.kind == "i":
            return np.full(LANES, operand.index, dtype=np.int64)
        if operand.kind == "c":
            return self._constant(operand)
        if operand.kind == "s" and operand.text == "SRZ":
            return _zeros()
        raise Unsupported(f"operand {operand.text!r} ({operand.kind}) as a value")

    def read_pair(self, operand: Operand) -> np.ndarray:
        """A 64-bit value: a register pair (R, R+1), or a 64-bit constant."""
        if operand.kind == "r":
            low = self.read(operand)
            if _is_zero(operand):
                return low
            high = self.read(Operand("r", bank=operand.bank, index=operand.index + 1))
            return (low & _MASK) | (high << 32)
        if operand.kind == "c":
            return self._constant(operand, 8)
        if operand.kind == "i":
            value = np.int64(operand.index)
            return np.full(LANES, value if value < 2**31 else value - 2**32, dtype=np.int64)
        raise Unsupported(f"operand {operand.text!r} as a 64-bit value")

    def integer(self, operand: Operand) -> np.ndarray:
        """The operand with ``-`` and ``~`` applied, as a 32-bit unsigned value."""
        value = self.read(operand)
        if operand.invert:
            value = ~value
        if operand.negate and operand.kind != "p":
            value = -value
        return value & _MASK

    def adder(self, operand: Operand) -> np.ndarray:
        """An adder input: ``-x`` enters as ``~x + 1``, unreduced, so carries come out right."""
        value = self.read(operand) & _MASK
        if operand.invert:
            return ~value & _MASK
        if operand.negate:
            return (~value & _MASK) + 1
        return value

    def real(self, operand: Operand) -> np.ndarray:
        """A float32 operand with ``|x|`` and ``-x`` applied."""
        value = _float32(self.read(operand))
        if operand.absolute:
            value = np.abs(value)
        if operand.negate:
            value = -value
        return value

    def predicate(self, operand: Operand) -> np.ndarray:
        bank = self.predicates if operand.bank == "P" else self.uniform_predicates
        value = bank[operand.index]
        return ~value if operand.negate else value

    def write(self, operand: Operand, value, mask: np.ndarray) -> None:
        if operand.kind != "r":
            raise Unsupported(f"destination {operand.text!r}")
        value = np.broadcast_to(np.asarray(value, dtype=np.int64) & _MASK, (LANES,))
        if operand.bank == "R":
            if operand.index != 255:
                np.copyto(self.registers[operand.index], value, where=mask)
        elif operand.index != 63:
            np.copyto(self.uniform[operand.index], value, where=mask)

    def write_pair(self, operand: Operand, value, mask: np.ndarray) -> None:
        value = np.asarray(value, dtype=np.int64)
        self.write(operand, value & _MASK, mask)
        if not _is_zero(operand):
            high = Operand("r", bank=operand.bank, index=operand.index + 1)
            self.write(high, (value >> 32) & _MASK, mask)

    def set_predicate(self, operand: Operand, value: np.ndarray, mask: np.ndarray) -> None:
        if operand.kind != "p":
            raise Unsupported(f"predicate destination {operand.text!r}")
        if operand.index == 7:
            return
        bank = self.predicates if operand.bank == "P" else self.uniform_predicates
        np.copyto(bank[operand.index], np.broadcast_to(value, (LANES,)), where=mask)

    def special(self, operand: Operand) -> np.ndarray:
        name = operand.text
        axes = {"X": 0, "Y": 1, "Z": 2}
        if name.startswith("SR_TID."):
            return self.thread_indices[:, axes[name[-1]]].astype(np.int64)
        if name.startswith("SR_CTAID."):
            return np.full(LANES, self.block_index[axes[name[-1]]], dtype=np.int64)
        if name == "SR_LANEID":
            return np.arange(LANES, dtype=np.int64)
        if name in ("SRZ", "SR_CgaCtaId"):  # one block per cluster: its rank is 0
            return _zeros()
        raise Unsupported(f"special register {name}")

    # ------------------------------------------------------------------ running
    def start(self, entry: int) -> None:
        self.pcs[:] = entry

    def advance(self, limit: int = 5_000_000) -> bool:
        """Run until every live thread waits at a barrier (True) or has exited (False)."""
        instructions = self.program.instructions
        pcs = self.pcs
        big = np.int64(1 << 40)
        while self.live.any():
            pc = int(np.where(self.live, pcs, big).min())
            mask = self.live & (pcs == pc)
            if pc >= len(instructions):
                raise Unsupported("a thread ran past the end of the function")
            instruction = instructions[pc]
            self.issued += 1
            self.by_opcode[instruction.opcode] = self.by_opcode.get(instruction.opcode, 0) + 1
            if self.issued > limit:
                raise Unsupported(f"more than {limit} warp instructions: a loop that never ends?")
            active = mask & self.predicate(instruction.guard) if instruction.guard else mask
            jump = _execute(self, instruction, active)
            pcs[mask] = pc + 1
            if jump is not None:
                kind, lanes = jump
                if isinstance(kind, np.ndarray):  # BRX: a target per lane
                    pcs[lanes] = kind[lanes]
                elif kind == "exit":
                    self.live &= ~lanes
                else:
                    pcs[lanes] = kind
            if instruction.opcode == "BAR" and mask.sum() == self.live.sum():
                return True
        return False

    def run(self, entry: int, limit: int = 5_000_000) -> WarpRun:
        """Execute a warp that does not share a block with others, to its end."""
        self.start(entry)
        while self.advance(limit):
            pass
        return self.result()

    def result(self) -> WarpRun:
        return WarpRun(self.issued, dict(self.by_opcode), self.accesses)


def run_block(warps: list[Warp], entry: int, limit: int = 5_000_000) -> list[WarpRun]:
    """Run the warps of one block, barrier by barrier (``BAR.SYNC``), to their end."""
    for warp in warps:
        warp.start(entry)
    waiting = list(warps)
    while waiting:
        waiting = [warp for warp in waiting if warp.advance(limit)]
    return [warp.result() for warp in warps]


def _is_zero(operand: Operand) -> bool:
    """RZ or URZ."""
    return operand.index == (255 if operand.bank == "R" else 63)


def _zeros() -> np.ndarray:
    return np.zeros(LANES, dtype=np.int64)


# ---------------------------------------------------------------------- semantics


def _compare(kind: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if kind == "EQ":
        return a == b
    if kind == "NE":
        return a != b
    if kind == "LT":
        return a < b
    if kind == "LE":
        return a <= b
    if kind == "GT":
        return a > b
    if kind == "GE":
        return a >= b
    raise Unsupported(f"comparison {kind}")


def _signed(value: np.ndarray) -> np.ndarray:
    value = value & _MASK
    return np.where(value >= 2**31, value - 2**32, value)


def _combine(kind: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if kind == "AND":
        return a & b
    if kind == "OR":
        return a | b
    if kind == "XOR":
        return a ^ b
    raise Unsupported(f"predicate combination {kind}")


def _isetp(warp: Warp, instruction: Instruction, active) -> None:
    modifiers = instruction.modifiers
    comparison = modifiers[0]
    unsigned = "U32" in modifiers
    combine = next(m for m in modifiers if m in ("AND", "OR", "XOR"))
    operands = instruction.operands
    a, b = warp.integer(operands[2]), warp.integer(operands[3])
    if not unsigned:
        a, b = _signed(a), _signed(b)
    if "EX" in modifiers:
        # the high words of a 64-bit comparison; operands[5] holds the low words' result
        low = warp.predicate(operands[5])
        if comparison == "EQ":
            condition = (a == b) & low
        elif comparison == "NE":
            condition = (a != b) | low
        else:
            strict = {"GE": "GT", "LE": "LT"}.get(comparison, comparison)
            condition = _compare(strict, a, b) | ((a == b) & low)
    else:
        condition = _compare(comparison, a, b)
    destination, complement, other = operands[0], operands[1], warp.predicate(operands[4])
    warp.set_predicate(destination, _combine(combine, condition, other), active)
    warp.set_predicate(complement, _combine(combine, ~condition, other), active)


def _fsetp(warp: Warp, instruction: Instruction, active) -> None:
    modifiers = instruction.modifiers
    comparison = modifiers[0]
    combine = next(m for m in modifiers if m in ("AND", "OR", "XOR"))
    operands = instruction.operands
    a, b = warp.real(operands[2]), warp.real(operands[3])
    unordered = np.isnan(a) | np.isnan(b)
    with np.errstate(invalid="ignore"):
        if comparison == "NAN":
            condition = unordered
        elif comparison == "NUM":
            condition = ~unordered
        elif comparison.endswith("U") and comparison not in ("EQU",):
            condition = _compare(comparison[:-1], a, b) | unordered
        elif comparison == "EQU":
            condition = (a == b) | unordered
        elif comparison == "NEU":
            condition = (a != b) | unordered
        else:
            condition = _compare(comparison, a, b) & ~unordered
    destination, complement, other = operands[0], operands[1], warp.predicate(operands[4])
    warp.set_predicate(destination, _combine(combine, condition, other), active)
    warp.set_predicate(complement, _combine(combine, ~condition, other), active)


def _lut(lut: int, a, b, c):
    result = np.zeros_like(a)
    ones = np.ones_like(a) * (_MASK if a.dtype != bool else True)
    for minterm in range(8):
        if lut >> minterm & 1:
            term = (
                (a if minterm & 4 else ~a & ones)
                & (b if minterm & 2 else ~b & ones)
                & (c if minterm & 1 else ~c & ones)
            )
            result = result | term
    return result


def _split_predicates(
    operands: list[Operand],
) -> tuple[list[Operand], list[Operand], list[Operand]]:
    """(destination registers and predicates before the sources, sources, predicates after)."""
    head = [operands[0]]
    index = 1
    while index < len(operands) and operands[index].kind == "p":
        head.append(operands[index])
        index += 1
    tail_start = len(operands)
    while tail_start > index and operands[tail_start - 1].kind == "p":
        tail_start -= 1
    return head, operands[index:tail_start], operands[tail_start:]


def _iadd3(warp: Warp, instruction: Instruction, active) -> None:
    head, sources, carries_in = _split_predicates(instruction.operands)
    total = sum(warp.adder(source) for source in sources)
    if "X" in instruction.modifiers:
        for carry in carries_in:
            total = total + warp.predicate(carry).astype(np.int64)
    warp.write(head[0], total, active)
    carry = total >> 32
    for position, predicate in enumerate(head[1:]):
        warp.set_predicate(predicate, carry > position, active)


def _imad(warp: Warp, instruction: Instruction, active) -> None:
    modifiers = instruction.modifiers
    head, sources, carries_in = _split_predicates(instruction.operands)
    destination = head[0]
    a, b, c = sources
    if "MOV" in modifiers:
        warp.write(destination, warp.integer(c), active)
        return
    if "IADD" in modifiers:
        warp.write(destination, warp.integer(a) + warp.integer(c), active)
        return
    unsigned = "U32" in modifiers
    x, y = warp.integer(a), warp.integer(b)
    if not unsigned:
        x, y = _signed(x), _signed(y)
    if "WIDE" in modifiers:
        product = _multiply64(x, y)
        warp.write_pair(destination, product + warp.read_pair(c), active)
        return
    if "HI" in modifiers:
        addend = warp.read_pair(c) if c.kind == "r" else warp.integer(c)
        high = _multiply_high(x, y, unsigned) + (addend >> 32) + _carry_low(x, y, addend)
        warp.write(destination, high, active)
        return
    value = (x * y + warp.integer(c)) & _MASK
    if "X" in modifiers:
        for carry in carries_in:
            value = value + warp.predicate(carry).astype(np.int64)
    warp.write(destination, value, active)


def _multiply64(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # exact for 32 x 32-bit operands in int64 arithmetic (wraps like a 64-bit register)
    return (x.astype(np.int64) * y.astype(np.int64)).astype(np.int64)


def _multiply_high(x: np.ndarray, y: np.ndarray, unsigned: bool) -> np.ndarray:
    product = [int(a) * int(b) for a, b in zip(x.tolist(), y.tolist())]
    return np.array([(p >> 32) & 0xFFFFFFFF for p in product], dtype=np.int64)


def _carry_low(x: np.ndarray, y: np.ndarray, addend: np.ndarray) -> np.ndarray:
    low = np.array([(int(a) * int(b)) & 0xFFFFFFFF for a, b in zip(x.tolist(), y.tolist())])
    return ((low + (addend & _MASK)) >> 32).astype(np.int64)


def _lea(warp: Warp, instruction: Instruction, active) -> None:
    modifiers = instruction.modifiers
    head, sources, carries_in = _split_predicates(instruction.operands)
    destination = head[0]
    carry_in = sum(warp.predicate(c).astype(np.int64) for c in carries_in) if carries_in else 0
    if "HI" in modifiers:
        if "SX32" in modifiers:
            a, b, shift = sources
            low = warp.integer(a)
            high = np.where(low >= 2**31, _MASK, 0)
        else:
            a, b, c, shift = sources
            low, high = warp.integer(a), warp.integer(c)
        s = int(shift.index)
        combined = [((int(h) << 32) | int(v)) >> (32 - s) for h, v in zip(high, low)]
        value = np.array([x & 0xFFFFFFFF for x in combined], dtype=np.int64)
        total = value + warp.adder(b) + carry_in
    else:
        a, b, shift = sources[:3]
        total = ((warp.integer(a) << int(shift.index)) & _MASK) + warp.adder(b) + carry_in
    warp.write(destination, total, active)
    for position, predicate in enumerate(head[1:]):
        warp.set_predicate(predicate, (total >> 32) > position, active)


def _shf(warp: Warp, instruction: Instruction, active) -> None:
    modifiers = instruction.modifiers
    destination, low_operand, shift_operand, high_operand = instruction.operands
    direction, mode = modifiers[0], modifiers[1]
    high_word = "HI" in modifiers
    low, high = warp.integer(low_operand), warp.integer(high_operand)
    shift = warp.integer(shift_operand)
    limit = 32 if mode in ("U32", "S32") else 64
    shift = np.minimum(shift & (0x3F if limit == 64 else 0xFFFFFFFF), limit)
    results = []
    for lo, hi, s in zip(low.tolist(), high.tolist(), shift.tolist()):
        value = (hi << 32) | lo
        if mode in ("S32", "S64") and hi >= 2**31:
            value -= 1 << 64
        value = value << s if direction == "L" else value >> s
        value &= (1 << 64) - 1
        results.append((value >> 32) & 0xFFFFFFFF if high_word else value & 0xFFFFFFFF)
    warp.write(destination, np.array(results, dtype=np.int64), active)


def _prmt(warp: Warp, instruction: Instruction, active) -> None:
    destination, a, selector, b = instruction.operands
    if instruction.modifiers:
        raise Unsupported(instruction.text)
    low, high, select = warp.integer(a), warp.integer(b), warp.integer(selector)
    source = (high << 32) | low
    result = _zeros()
    for byte in range(4):
        nibble = (select >> (4 * byte)) & 0xF
        value = (source >> (8 * (nibble & 7))) & 0xFF
        sign = np.where((value & 0x80) != 0, 0xFF, 0)
        value = np.where(nibble & 8, sign, value)
        result |= value << (8 * byte)
    warp.write(destination, result, active)


def _idp(warp: Warp, instruction: Instruction, active) -> None:
    """IDP.4A.<a>.<b>: the four byte products of a and b (each U8 or S8) summed into c."""
    destination, a, b, c = instruction.operands
    modifiers = instruction.modifiers
    if len(modifiers) != 3 or modifiers[0] != "4A":
        raise Unsupported(instruction.text)
    total = warp.integer(c)
    for byte in range(4):
        products = []
        for operand, kind in ((a, modifiers[1]), (b, modifiers[2])):
            value = (warp.integer(operand) >> (8 * byte)) & 0xFF
            products.append(np.where(value & 0x80, value - 256, value) if kind == "S8" else value)
        total = total + products[0] * products[1]
    warp.write(destination, total & _MASK, active)


def _i2ip(warp: Warp, instruction: Instruction, active) -> None:
    """I2IP.U8.S32.SAT d, a, b, c (PTX cvt.pack.sat.u8.s32.b32): a and b saturated to bytes,
    d = c << 16 | a << 8 | b."""
    destination, a, b, c = instruction.operands
    if instruction.modifiers != ("U8", "S32", "SAT"):
        raise Unsupported(instruction.text)
    high, low = (np.clip(_signed(warp.integer(x)), 0, 255) for x in (a, b))
    warp.write(destination, ((warp.integer(c) << 16) | high << 8 | low) & _MASK, active)


def _f2ip(warp: Warp, instruction: Instruction, active) -> None:
    """F2IP.U8.F32.NTZ d, a, b, c: ptxas's fusion of cvt.rni.s32.f32 with
    cvt.pack.sat.u8.s32.b32: a and b rounded half to even, NaN to 0, saturated to bytes,
    d = c << 16 | a << 8 | b."""
    destination, a, b, c = instruction.operands
    if instruction.modifiers not in (("U8", "F32", "NTZ"), ("U8", "F32")):
        raise Unsupported(instruction.text)
    high, low = (
        np.clip(np.nan_to_num(np.rint(warp.real(x).astype(np.float64)), nan=0.0), 0, 255).astype(
            np.int64
        )
        for x in (a, b)
    )
    warp.write(destination, ((warp.integer(c) << 16) | high << 8 | low) & _MASK, active)


def _f2i(warp: Warp, instruction: Instruction, active) -> None:
    destination, source = instruction.operands[0], instruction.operands[-1]
    modifiers = instruction.modifiers
    value = warp.real(source).astype(np.float64)
    if "TRUNC" in modifiers:
        value = np.trunc(value)
    elif "FLOOR" in modifiers:
        value = np.floor(value)
    elif "CEIL" in modifiers:
        value = np.ceil(value)
    else:
        value = np.rint(value)
    value = np.nan_to_num(value, nan=0.0)
    if "U32" in modifiers:
        value = np.clip(value, 0, 2**32 - 1)
    elif any(m in modifiers for m in ("U64", "S64")):
        raise Unsupported(instruction.text)
    else:
        value = np.clip(value, -(2**31), 2**31 - 1)
    warp.write(destination, value.astype(np.int64), active)


def _i2f(warp: Warp, instruction: Instruction, active) -> None:
    destination, source = instruction.operands[0], instruction.operands[-1]
    modifiers = instruction.modifiers
    value = warp.integer(source)
    if "U16" in modifiers:
        value = value & 0xFFFF
    elif "S16" in modifiers:
        value = _signed(value << 16) >> 16
    elif "U8" in modifiers:
        value = value & 0xFF
    elif "U32" not in modifiers:
        value = _signed(value)
    result = value.astype(np.float64).astype(np.float32)
    if "RP" in modifiers:  # round toward +infinity
        below = result.astype(np.float64) < value
        result = np.where(below, np.nextafter(result, np.float32(np.inf)), result)
    warp.write(destination, _bits(result), active)


def _float_binary(operation):
    def execute(warp: Warp, instruction: Instruction, active) -> None:
        operands = instruction.operands
        values = [warp.real(o) for o in operands[1:]]
        with np.errstate(all="ignore"):
            result = operation(*values)
        warp.write(operands[0], _bits(result), active)

    return execute


def _mufu(warp: Warp, instruction: Instruction, active) -> None:
    destination, source = instruction.operands
    value = warp.real(source)
    function = instruction.modifiers[0]
    with np.errstate(all="ignore"):
        if function == "RCP":
            result = np.float32(1) / value
        elif function == "RSQ":
            result = np.float32(1) / np.sqrt(value)
        elif function == "SQRT":
            result = np.sqrt(value)
        elif function == "EX2":
            result = np.exp2(value)
        elif function == "LG2":
            result = np.log2(value)
        else:
            raise Unsupported(instruction.text)
    warp.write(destination, _bits(result), active)


def _frnd(warp: Warp, instruction: Instruction, active) -> None:
    destination, source = instruction.operands
    value = warp.real(source)
    modifiers = instruction.modifiers
    if "TRUNC" in modifiers:
        result = np.trunc(value)
    elif "FLOOR" in modifiers:
        result = np.floor(value)
    elif "CEIL" in modifiers:
        result = np.ceil(value)
    else:
        result = np.rint(value)
    warp.write(destination, _bits(result), active)


def _memory_width(instruction: Instruction) -> int:
    for modifier in instruction.modifiers:
        if modifier in ("U8", "S8"):
            return 1
        if modifier in ("U16", "S16"):
            return 2
        if modifier in ("64",):
            return 8
        if modifier in ("128",):
            return 16
    return 4


def _effective_address(warp: Warp, operand: Operand) -> np.ndarray:
    address = np.full(LANES, operand.offset, dtype=np.int64)
    if operand.base is not None:
        base = warp.read_pair(operand.base) if operand.base.wide else warp.read(operand.base)
        address = address + base
    if operand.uniform is not None:
        address = address + warp.read(operand.uniform)
    return address


def _extend(words: np.ndarray, instruction: Instruction) -> np.ndarray:
    """Sign-extend narrow signed loads (S8, S16); the others are zero-extended already."""
    if "S8" in instruction.modifiers:
        words[0] = np.where(words[0] & 0x80, words[0] | 0xFFFFFF00, words[0])
    elif "S16" in instruction.modifiers:
        words[0] = np.where(words[0] & 0x8000, words[0] | 0xFFFF0000, words[0])
    return words


def _load(warp: Warp, instruction: Instruction, active) -> None:
    destination, address_operand = instruction.operands[0], instruction.operands[-1]
    width = _memory_width(instruction)
    addresses = _effective_address(warp, address_operand)
    if instruction.opcode == "LDL":
        words = np.zeros((max(1, width // 4), LANES), dtype=np.int64)
        for word in range(len(words)):
            for lane in np.flatnonzero(active):
                cell = warp.local.get(int(addresses[lane]) + 4 * word)
                words[word, lane] = 0 if cell is None else cell[lane]
    elif instruction.opcode == "LDS":
        words = warp.memory.read_shared(np.where(active, addresses, 0x400), width)
    else:
        warp.accesses.append(Access(instruction.address, False, active.copy(), addresses, width))
        words = warp.memory.read_global(addresses, width)
    words = _extend(words, instruction)
    for word in range(len(words)):
        warp.write(_next_register(destination, word), words[word], active)


def _store(warp: Warp, instruction: Instruction, active) -> None:
    address_operand, source = instruction.operands[0], instruction.operands[1]
    width = _memory_width(instruction)
    addresses = _effective_address(warp, address_operand)
    words = np.stack([warp.read(_next_register(source, w)) for w in range(max(1, width // 4))])
    if instruction.opcode == "STG":
        warp.accesses.append(Access(instruction.address, True, active.copy(), addresses, width))
    elif instruction.opcode == "STS":
        warp.memory.write_shared(addresses, width, words, active)
    else:  # STL
        for word in range(len(words)):
            for lane in np.flatnonzero(active):
                key = int(addresses[lane]) + 4 * word
                cell = warp.local.setdefault(key, _zeros())
                cell[lane] = words[word, lane]


def _next_register(operand: Operand, offset: int) -> Operand:
    if offset == 0 or _is_zero(operand):
        return operand
    return Operand("r", bank=operand.bank, index=operand.index + offset)


def _branch(warp: Warp, instruction: Instruction, active):
    if instruction.target < 0:
        raise Unsupported(f"branch without a known target: {instruction.text}")
    first = instruction.operands[0] if instruction.operands else None
    if first is not None and first.kind == "p":  # "BRA P2, target": also only where P2
        active = active & warp.predicate(first)
    return instruction.target, active


def _indirect_branch(warp: Warp, instruction: Instruction, active):
    """``BRX Ra imm`` (``BRXU URa imm``): to address Ra + imm from the next instruction (a
    switch's jump table entry, read from constant bank 2, is the function-relative address
    itself)."""
    # nvdisasm prints the two without a comma ("BRX R14 -0x960"): one operand to split
    register, offset = (sass_operand(part) for part in instruction.operands[0].text.split())
    following = instruction.address + 16
    addresses = (warp.integer(register) + warp.integer(offset) + following) & _MASK
    targets = np.zeros(LANES, dtype=np.int64)
    for lane in np.flatnonzero(active):
        address = int(addresses[lane])
        if address not in warp.program.indices:
            raise Unsupported(f"BRX to {address:#x}, not an instruction: {instruction.text}")
        targets[lane] = warp.program.indices[address]
    return targets, active


def _execute(warp: Warp, instruction: Instruction, active: np.ndarray):
    opcode = instruction.opcode
    if opcode == "BRA":
        return _branch(warp, instruction, active)
    if opcode in ("BRX", "BRXU"):  # BRXU: the address in a uniform register
        if not active.any():
            return None
        return _indirect_branch(warp, instruction, active)
    if opcode == "EXIT":
        return "exit", active
    # BREAK takes threads out of a convergence barrier's wait: with the lowest-PC rule
    # above (which ignores BSSY/BSYNC) there is nothing to take them out of.
    if opcode in ("BSSY", "BSYNC", "BREAK", "BAR", "NOP", "WARPSYNC", "YIELD", "DEPBAR", "MEMBAR"):
        return None
    if not active.any():
        return None
    handler = _HANDLERS.get(opcode)
    if handler is None:
        raise Unsupported(f"instruction {instruction.text!r} at {instruction.address:#06x}")
    handler(warp, instruction, active)
    return None


def _mov(warp, instruction, active):
    warp.write(instruction.operands[0], warp.integer(instruction.operands[1]), active)


def _s2r(warp, instruction, active):
    warp.write(instruction.operands[0], warp.special(instruction.operands[1]), active)


def _ldc(warp, instruction, active):
    destination, source = instruction.operands
    if "64" in instruction.modifiers:
        warp.write_pair(destination, warp._constant(source, 8), active)
    else:
        warp.write(destination, warp._constant(source), active)


def _uniform_mask(active):
    return np.ones(LANES, dtype=bool) if active.any() else active


def _ldc_uniform(warp, instruction, active):
    _ldc(warp, instruction, _uniform_mask(active))


def _r2ur(warp, instruction, active):
    destination, source = instruction.operands
    values = warp.integer(source)
    lane = int(np.flatnonzero(active)[0])
    warp.write(destination, np.full(LANES, values[lane]), _uniform_mask(active))


def _cs2r(warp, instruction, active):
    destination, source = instruction.operands
    value = warp.special(source)
    if "32" in instruction.modifiers:
        warp.write(destination, value, active)
    else:
        warp.write_pair(destination, value, active)


def _lop3(warp, instruction, active):
    operands = instruction.operands
    predicate_out = operands[0] if operands[0].kind == "p" else None
    if predicate_out is not None:
        operands = operands[1:]
    destination, a, b, c, lut = operands[:5]
    if len(operands) > 5 and not (
        operands[5].kind == "p" and operands[5].index == 7 and operands[5].negate
    ):
        raise Unsupported(instruction.text)  # only the form with a !PT predicate input
    result = _lut(int(lut.index), warp.integer(a), warp.integer(b), warp.integer(c)) & _MASK
    warp.write(destination, result, active)
    if predicate_out is not None:
        warp.set_predicate(predicate_out, result != 0, active)


def _plop3(warp, instruction, active):
    operands = instruction.operands
    first, second, a, b, c, lut, lut2 = operands
    values = [warp.predicate(p) for p in (a, b, c)]
    warp.set_predicate(first, _lut(int(lut.index) & 0xFF, *values), active)
    warp.set_predicate(second, _lut(int(lut2.index) & 0xFF, *values), active)


def _sel(warp, instruction, active):
    destination, a, b, condition = instruction.operands
    chosen = np.where(warp.predicate(condition), warp.integer(a), warp.integer(b))
    warp.write(destination, chosen, active)


def _minmax(warp, instruction, active):
    destination, a, b, selector = instruction.operands
    x, y = warp.integer(a), warp.integer(b)
    if "U32" not in instruction.modifiers:
        x, y = _signed(x), _signed(y)
    minimum = warp.predicate(selector)
    warp.write(destination, np.where(minimum, np.minimum(x, y), np.maximum(x, y)), active)


def _fminmax(warp, instruction, active):
    destination, a, b, selector = instruction.operands
    x, y = warp.real(a), warp.real(b)
    minimum = warp.predicate(selector)
    result = np.where(minimum, np.fmin(x, y), np.fmax(x, y))
    warp.write(destination, _bits(result), active)


def _iabs(warp, instruction, active):
    destination, source = instruction.operands
    warp.write(destination, np.abs(_signed(warp.integer(source))), active)


def _viadd(warp, instruction, active):
    destination, a, b = instruction.operands
    warp.write(destination, warp.integer(a) + warp.integer(b), active)


def _viaddmnmx(warp, instruction, active):
    """``d = min or max(a + b, c)`` (32-bit add, then IMNMX's rule; sm_90 fuses the two)."""
    destination, a, b, c, selector = instruction.operands
    total = (warp.integer(a) + warp.integer(b)) & _MASK
    other = warp.integer(c)
    if "U32" not in instruction.modifiers:
        total, other = _signed(total), _signed(other)
    minimum = warp.predicate(selector)
    warp.write(
        destination, np.where(minimum, np.minimum(total, other), np.maximum(total, other)), active
    )


def _half_operand(warp, operand) -> np.ndarray:
    """A float16 operand (``R10.H0_H0``: the low half, ``.H1_H1``: the high one) as float32."""
    bits = warp.read(operand) & _MASK
    half = (bits >> 16) & 0xFFFF if ".H1" in operand.text else bits & 0xFFFF
    value = half.astype(np.uint16).view(np.float16).astype(np.float32)
    return -value if operand.negate else value


def _hadd2_f32(warp, instruction, active):
    """``HADD2.F32 d, a, b``: two float16 halves added into one float32 (``-RZ + h``: h to float)."""
    if "F32" not in instruction.modifiers:
        raise Unsupported(f"instruction {instruction.text!r}")
    destination, a, b = instruction.operands
    warp.write(destination, _bits(_half_operand(warp, a) + _half_operand(warp, b)), active)


def _f2fp(warp, instruction, active):
    """``F2FP.F16.F32.PACK_AB d, a, b``: two float32 rounded to float16, a high and b low."""
    if instruction.modifiers[:2] != ("F16", "F32"):
        raise Unsupported(f"instruction {instruction.text!r}")
    destination, a, b = instruction.operands
    with np.errstate(over="ignore"):
        high = warp.real(a).astype(np.float16).view(np.uint16).astype(np.int64)
        low = warp.real(b).astype(np.float16).view(np.uint16).astype(np.int64)
    warp.write(destination, (high << 16) | low, active)


def _p2r(warp, instruction, active):
    destination, _, source, mask_operand = instruction.operands
    mask = int(mask_operand.index)
    packed = _zeros()
    for bit in range(7):
        packed |= warp.predicates[bit].astype(np.int64) << bit
    value = (warp.integer(source) & ~mask & _MASK) | (packed & mask)
    warp.write(destination, value, active)


def _r2p(warp, instruction, active):
    _, source, mask_operand = instruction.operands
    mask = int(mask_operand.index)
    value = warp.integer(source)
    for bit in range(7):
        if mask >> bit & 1:
            np.copyto(warp.predicates[bit], ((value >> bit) & 1) != 0, where=active)


def _ffma(warp, instruction, active):
    destination, a, b, c = instruction.operands
    with np.errstate(all="ignore"):
        result = (
            warp.real(a).astype(np.float64) * warp.real(b).astype(np.float64) + warp.real(c)
        ).astype(np.float32)
    warp.write(destination, _bits(result), active)


def _fsel(warp, instruction, active):
    destination, a, b, condition = instruction.operands
    chosen = np.where(warp.predicate(condition), warp.read(a), warp.read(b))
    warp.write(destination, chosen, active)


def _hfma2(warp, instruction, active):
    operands = instruction.operands
    a, b = operands[1], operands[2]
    if not (a.kind == "r" and a.index == 255 and b.kind == "r" and b.index == 255):
        raise Unsupported(instruction.text)  # only the constant-materialising form
    halves = []
    for operand in operands[3:5]:
        value = np.float32(_float32(np.array([operand.index]))[0]).astype(np.float16)
        halves.append(int(value.view(np.uint16)))
    # the first immediate is the high half: "HFMA2.MMA R41, -RZ, RZ, 0, 1.37e-06" is the
    # integer 23 (a loop count), the half 1.37e-06's bits 0x0017 in the low half
    warp.write(operands[0], np.full(LANES, halves[1] | halves[0] << 16), active)


_HANDLERS = {
    "MOV": _mov,
    "UMOV": lambda w, i, a: _mov(w, i, _uniform_mask(a)),
    "S2R": _s2r,
    "S2UR": lambda w, i, a: _s2r(w, i, _uniform_mask(a)),
    "CS2R": _cs2r,
    "LDC": _ldc,
    "ULDC": _ldc_uniform,
    "R2UR": _r2ur,
    "IMAD": _imad,
    "UIMAD": lambda w, i, a: _imad(w, i, _uniform_mask(a)),
    "IADD3": _iadd3,
    "UIADD3": lambda w, i, a: _iadd3(w, i, _uniform_mask(a)),
    "VIADD": _viadd,
    "VIADDMNMX": _viaddmnmx,
    "HADD2": _hadd2_f32,
    "F2FP": _f2fp,
    "LEA": _lea,
    "ULEA": lambda w, i, a: _lea(w, i, _uniform_mask(a)),
    "SHF": _shf,
    "USHF": lambda w, i, a: _shf(w, i, _uniform_mask(a)),
    "LOP3": _lop3,
    "ULOP3": lambda w, i, a: _lop3(w, i, _uniform_mask(a)),
    "PLOP3": _plop3,
    "UPLOP3": lambda w, i, a: _plop3(w, i, _uniform_mask(a)),
    "ISETP": _isetp,
    "UISETP": lambda w, i, a: _isetp(w, i, _uniform_mask(a)),
    "FSETP": _fsetp,
    "SEL": _sel,
    "USEL": lambda w, i, a: _sel(w, i, _uniform_mask(a)),
    "FSEL": _fsel,
    "VIMNMX": _minmax,
    "IMNMX": _minmax,
    "FMNMX": _fminmax,
    "IABS": _iabs,
    "PRMT": _prmt,
    "UPRMT": lambda w, i, a: _prmt(w, i, _uniform_mask(a)),
    "IDP": _idp,
    "I2IP": _i2ip,
    "F2IP": _f2ip,
    "P2R": _p2r,
    "R2P": _r2p,
    "F2I": _f2i,
    "I2F": _i2f,
    "I2FP": _i2f,
    "MUFU": _mufu,
    "FRND": _frnd,
    "FFMA": _ffma,
    "FMUL": _float_binary(lambda a, b: (a * b).astype(np.float32)),
    "FADD": _float_binary(lambda a, b: (a + b).astype(np.float32)),
    "HFMA2": _hfma2,
    "LDG": _load,
    "LDS": _load,
    "LDL": _load,
    "STG": _store,
    "STS": _store,
    "STL": _store,
}
