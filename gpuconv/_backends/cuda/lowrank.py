"""The CUDA backend's low-rank path: one separable launch per term, summed, rounded once.

A kernel of numerical rank ``r`` (a difference of Gaussians: 2; a smooth PSF: 2 to 4) runs
as ``r`` launches of the separable kernel (``gpuconv_separable``, or ``gpuconv_global`` on
the term where a tile and halo would not fit shared memory), each writing its raw float
sums (the accumulator's dtype) to a scratch image; the scratch images are added in that
dtype and the total is stored as every path stores (cast, or rounded half to even,
saturated, NaN to 0). The terms come from :func:`gpuconv._costmodel.gpu_lowrank_terms`.

Not here: exact integer plans (they keep the direct kernel, bit-identical); large full-rank
float kernels take the FFT (:func:`gpuconv._backends.cuda.backend.run_fft`) where it pays.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ... import _costmodel
from ..._plan import ConvolutionPlan
from ..._strategy import Strategy, choose_strategy
from .launch import plan_launch
from .launch_base import DEFAULT_LIMITS, DeviceLimits, Launch


def lowrank_launches(plan: ConvolutionPlan, limits: DeviceLimits = DEFAULT_LIMITS):
    """``(launches, accumulator)`` of the low-rank path for ``plan``, or None."""
    found = term_plans_and_launches(plan, limits)
    return None if found is None else ([launch for _, launch in found[0]], found[1])


def term_plans_and_launches(plan: ConvolutionPlan, limits: DeviceLimits = DEFAULT_LIMITS):
    """``([(term plan, launch), ...], accumulator)``, or None; the term plans are what
    the GPU model (:func:`gpuconv._gpumodel.model.predict_lowrank`) counts each launch on."""
    strategy = choose_strategy(plan)
    terms = _costmodel.gpu_lowrank_terms(plan, strategy)
    if terms is None:
        return None
    columns, rows, accumulator = terms
    launches: list[tuple[ConvolutionPlan, Launch]] = []
    for column, row in zip(columns, rows):
        term_kernel = np.outer(column, row)
        term_kernel.flags.writeable = False
        term_plan = dataclasses.replace(
            plan, kernel=term_kernel, output_dtype=accumulator, integer_kernel=False
        )
        term_strategy = Strategy(
            separable=True,
            column=column,
            row=row,
            integer=False,
            accumulator=accumulator,
            skip_zero_taps=False,  # float images: 0 * NaN is NaN, as the reference says
        )
        launches.append((term_plan, plan_launch(term_plan, term_strategy, limits, window=False)))
    return launches, accumulator


def store(total, output_dtype, xp):
    """Raw float sums to the output dtype, as every path stores them."""
    dtype = np.dtype(output_dtype)
    if dtype.kind == "f":
        return total.astype(dtype, copy=False)
    info = np.iinfo(dtype)
    rounded = xp.clip(xp.rint(total), info.min, info.max)
    # NaN to 0 element-wise: a boolean-mask assignment makes CuPy find the mask's nonzeros
    # first (a scan of the image and a wait for its count).
    return xp.where(xp.isnan(rounded), 0, rounded).astype(dtype)


def run_terms(image, plan: ConvolutionPlan, launches, accumulator, run_one, xp):
    """Run every term's launch with ``run_one(launch, output)``; sum; store."""
    total = None
    for launch in launches:
        partial = xp.empty(plan.shape, dtype=accumulator)
        run_one(launch, partial)
        if total is None:
            total = partial
        else:
            total += partial
            del partial
    return store(total, plan.output_dtype, xp)
