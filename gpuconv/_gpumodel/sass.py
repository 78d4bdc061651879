"""SASS from a CUBIN: finding ``nvdisasm``/``cuobjdump``, disassembling, parsing.

The tools come from the PyPI wheels ``nvidia-cuda-nvdisasm`` and ``nvidia-cuda-cuobjdump``
(the ``test`` extra), which install them as ``nvidia/cu13/bin/<tool>`` under
site-packages; a CUDA toolkit on ``PATH`` or under ``/usr/local/cuda*`` also serves.

:func:`parse` turns ``nvdisasm -c`` text into a :class:`Program`: one :class:`Instruction`
per SASS instruction (guard predicate, opcode and modifiers, parsed operands) and the
labels, which :mod:`gpuconv._gpumodel.simt` executes.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

_TOOL_DIRECTORIES = ("nvidia/cu13/bin", "nvidia/cuda_nvdisasm/bin", "nvidia/cuda_cuobjdump/bin")


class ToolMissing(RuntimeError):
    """``nvdisasm`` or ``cuobjdump`` is not installed."""


def find_tool(name: str) -> str:
    """Path of ``nvdisasm`` or ``cuobjdump``: the pip wheels first, then a CUDA toolkit."""
    for base in sys.path:
        for directory in _TOOL_DIRECTORIES:
            candidate = Path(base or ".") / directory / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(glob.glob(f"/usr/local/cuda*/bin/{name}"), reverse=True):
        if os.access(candidate, os.X_OK):
            return candidate
    raise ToolMissing(
        f"{name} not found: pip install nvidia-cuda-{name} (in gpuconv's test extra) "
        "or put a CUDA toolkit on PATH"
    )


def _run_tool(name: str, arguments: list[str], cubin: bytes) -> str:
    with tempfile.TemporaryDirectory(prefix="gpuconv-sass-") as directory:
        path = Path(directory) / "kernel.cubin"
        path.write_bytes(cubin)
        result = subprocess.run(
            [find_tool(name), *arguments, str(path)], capture_output=True, text=True, check=False
        )
    if result.returncode != 0:
        raise RuntimeError(f"{name} failed: {result.stderr.strip()[-2000:]}")
    return result.stdout


def disassemble(cubin: bytes) -> str:
    """The SASS text of every function in ``cubin`` (``nvdisasm -c``)."""
    return _run_tool("nvdisasm", ["-c"], cubin)


_RESOURCES = re.compile(r"REG:(\d+)\s+STACK:(\d+)\s+SHARED:(\d+)\s+LOCAL:(\d+)")


def resource_usage(cubin: bytes) -> dict[str, int]:
    """Registers per thread, stack, static shared and local bytes (``cuobjdump -res-usage``).

    One kernel per CUBIN is expected (the model compiles each instantiation alone).
    """
    text = _run_tool("cuobjdump", ["-res-usage"], cubin)
    match = _RESOURCES.search(text)
    if match is None:
        raise RuntimeError(f"cuobjdump -res-usage printed no resource line:\n{text[-2000:]}")
    registers, stack, shared, local = map(int, match.groups())
    return dict(registers=registers, stack_bytes=stack, shared_bytes=shared, local_bytes=local)


def constant_bank(cubin: bytes, function: str, bank: int) -> bytes:
    """Constant bank ``bank`` of ``function`` as the CUBIN holds it (its ELF section
    ``.nv.constant<bank>.<function>``; empty if there is none). Bank 2 holds the jump tables
    of ``switch`` statements, which ``BRX`` follows."""
    if cubin[:4] != b"\x7fELF" or cubin[4] != 2:
        raise ValueError("not a 64-bit ELF CUBIN")
    (section_table,) = struct.unpack_from("<Q", cubin, 0x28)
    entry_size, count, names_index = struct.unpack_from("<HHH", cubin, 0x3A)
    sections = [
        struct.unpack_from("<IIQQQQ", cubin, section_table + i * entry_size) for i in range(count)
    ]
    names_offset = sections[names_index][4]
    wanted = f".nv.constant{bank}.{function}".encode()
    for name, _, _, _, offset, size in sections:
        start = names_offset + name
        if cubin[start : cubin.index(b"\0", start)] == wanted:
            return bytes(cubin[offset : offset + size])
    return b""


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Operand:
    """One operand. ``kind``: ``r`` register, ``p`` predicate, ``i`` immediate, ``c``
    constant bank, ``m`` memory address, ``s`` special register, ``l`` label, ``b``
    convergence barrier, ``x`` anything else (kept as text)."""

    kind: str
    bank: str = ""  # "R" / "UR" for registers, "P" / "UP" for predicates
    index: int = 0  # register number (RZ = 255, URZ = 63, PT = UPT = 7), or immediate bits
    negate: bool = False  # -x (arithmetic) or !P
    invert: bool = False  # ~x (bitwise)
    absolute: bool = False  # |x|
    offset: int = 0  # constant-bank or memory offset
    base: Operand | None = None  # memory or constant-bank address register
    uniform: Operand | None = None  # memory address uniform register ([R2+UR4])
    wide: bool = False  # R2.64 in an address
    text: str = ""


@dataclass
class Instruction:
    address: int
    guard: Operand | None
    opcode: str  # the base, e.g. "IMAD"
    modifiers: tuple[str, ...]  # e.g. ("WIDE", "U32")
    operands: list[Operand]
    text: str
    target: int = -1  # branch target, an index into Program.instructions

    @property
    def name(self) -> str:
        return ".".join((self.opcode, *self.modifiers))


@dataclass
class Program:
    instructions: list[Instruction]
    labels: dict[str, int] = field(default_factory=dict)  # label or function name -> index
    indices: dict[int, int] = field(default_factory=dict)  # address -> index (for BRX)

    def entry(self, name: str) -> int:
        if name not in self.labels:
            raise KeyError(f"no function {name!r} in the SASS ({sorted(self.labels)[:5]} ...)")
        return self.labels[name]


_LINE = re.compile(r"^\s*/\*([0-9a-f]+)\*/\s+(.*?)\s*;")
_COMMENT = re.compile(r"\(\*.*?\*\)")
_LABEL = re.compile(r"^\s*(\.L_x_\d+|[A-Za-z_$][\w$.]*):\s*$")
_GUARD = re.compile(r"^@(!?)(U?P[0-9T])\s+")
_REGISTER = re.compile(r"^(U?R)(\d+|Z)$")
_PREDICATE = re.compile(r"^(U?P)([0-9T])$")
_SPECIAL = {"RZ": 255, "URZ": 63}


def _float_bits(text: str) -> int:
    special = {"+INF": float("inf"), "INF": float("inf"), "-INF": float("-inf")}
    if text in ("QNAN", "+QNAN", "NAN"):
        return 0x7FFFFFFF
    if text == "-QNAN":
        return 0xFFFFFFFF
    value = special.get(text)
    if value is None:
        value = float(text)
    return struct.unpack("<I", struct.pack("<f", value))[0]


def _register(text: str) -> Operand | None:
    name = text.split(".")[0]
    wide = ".64" in text
    match = _REGISTER.match(name)
    if not match:
        return None
    bank, number = match.groups()
    index = (255 if bank == "R" else 63) if number == "Z" else int(number)
    return Operand("r", bank=bank, index=index, wide=wide, text=text)


def _address(text: str, kind: str) -> Operand:
    """``[R2.64+0x10]``, ``[R1+UR4+0x8]``, ``[UR4]``, ``desc[UR4][R2.64]``: base, offset."""
    inner = text[text.rindex("[") + 1 : -1]
    registers, offset = [], 0
    for part in re.findall(r"[+-]?[^+-]+", inner.replace(" ", "")):
        sign = -1 if part.startswith("-") else 1
        part = part.lstrip("+-")
        register = _register(part)
        if register is not None:
            registers.append(register)
        else:
            offset += sign * int(part, 16 if part.startswith("0x") else 10)
    base = next((r for r in registers if r.bank == "R"), None)
    uniform = next((r for r in registers if r.bank == "UR"), None)
    if base is None:
        base, uniform = uniform, None
    return Operand(kind, base=base, uniform=uniform, offset=offset, text=text)


def _operand(text: str) -> Operand:
    text = text.strip()
    negate = invert = absolute = False
    if text.startswith("-") and not re.match(r"^-(0x|\d|INF|QNAN)", text):
        negate, text = True, text[1:]
    elif text.startswith("~"):
        invert, text = True, text[1:]
    elif text.startswith("!"):
        negate, text = True, text[1:]
    if text.startswith("|") and text.endswith("|"):
        absolute, text = True, text[1:-1]
        if text.startswith("-"):
            negate, text = not negate, text[1:]
    text = text.replace(".reuse", "")
    match = _PREDICATE.match(text)
    if match:
        bank, number = match.groups()
        return Operand("p", bank=bank, index=7 if number == "T" else int(number), negate=negate)
    register = _register(text)
    if register is not None:
        return Operand(
            "r",
            bank=register.bank,
            index=register.index,
            negate=negate,
            invert=invert,
            absolute=absolute,
            wide=register.wide,
            text=text,
        )
    if text.startswith("c[") or text.startswith("cx["):
        bank_text, rest = text[2:].split("]", 1)
        address = _address(rest, "c")
        return Operand(
            "c",
            index=int(bank_text, 16),
            offset=address.offset,
            base=address.base,
            negate=negate,
            invert=invert,
            absolute=absolute,
            text=text,
        )
    if text.startswith("[") or text.startswith("desc["):
        return _address(text, "m")
    if text.startswith("`(") or text.startswith("("):
        return Operand("l", text=text.strip("`()"))
    if text.startswith("SR_") or text == "SRZ":
        return Operand("s", text=text)
    if re.match(r"^B\d+$", text):
        return Operand("b", index=int(text[1:]), text=text)
    if re.match(r"^-?0x[0-9a-f]+$", text):
        value = int(text, 16)
        if negate:
            value = -value
        return Operand("i", index=value & 0xFFFFFFFF, text=text)
    try:
        bits = _float_bits(("-" if negate else "") + text)
    except ValueError:
        return Operand("x", text=text)
    return Operand("i", index=bits, text=text)


def _split_operands(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for character in text:
        if character in "[(":
            depth += 1
        elif character in "])":
            depth -= 1
        if character == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += character
    if current.strip():
        parts.append(current)
    return [part.strip() for part in parts]


def parse(text: str) -> Program:
    """Every instruction and label of ``nvdisasm -c`` output, in address order."""
    instructions: list[Instruction] = []
    labels: dict[str, int] = {}
    for line in text.splitlines():
        label = _LABEL.match(line)
        if label:
            labels[label.group(1)] = len(instructions)
            continue
        match = _LINE.match(line)
        if not match:
            continue
        address, body = int(match.group(1), 16), _COMMENT.sub("", match.group(2)).strip()
        guard = None
        guarded = _GUARD.match(body)
        if guarded:
            negate, name = guarded.groups()
            guard = Operand(
                "p",
                bank="UP" if name.startswith("U") else "P",
                index=7 if name.endswith("T") else int(name[-1]),
                negate=bool(negate),
            )
            body = body[guarded.end() :]
        name, _, rest = body.partition(" ")
        opcode, *modifiers = name.split(".")
        operands = [_operand(part) for part in _split_operands(rest)] if rest.strip() else []
        instructions.append(
            Instruction(address, guard, opcode, tuple(modifiers), operands, body.strip())
        )
    for instruction in instructions:
        for operand in instruction.operands:
            if operand.kind == "l" and operand.text in labels:
                instruction.target = labels[operand.text]
    indices = {instruction.address: i for i, instruction in enumerate(instructions)}
    return Program(instructions, labels, indices)
