"""llama.cpp's K-quant quantisers (Q4_K, Q5_K, Q6_K) in numpy, and llama-quantize's choice of tensor type.

gguf-py dequantises K-quants but quantises none, and llama.cpp's own quantiser is reachable from Python
only through llama-cpp-python, which PyPI serves as a source distribution that builds llama.cpp (many
minutes on two cores). So this is a port of llama.cpp's reference quantisers, `quantize_row_q4_K_ref`,
`quantize_row_q5_K_ref` and `quantize_row_q6_K_ref` (ggml/src/ggml-quants.c, llama.cpp as vendored in
llama-cpp-python 0.3.36): what `llama-quantize` runs for these types when no importance matrix is given.
The arithmetic is float32 in llama.cpp's order (sums accumulated left to right), so the bytes match
llama.cpp's; tests/test_export_quant.py checks that against llama.cpp itself where llama-cpp-python is
installed. Vectorised over blocks: one Python loop per search step, not per block.
"""

from __future__ import annotations

import numpy as np

QK_K = 256  # weights per super-block
GROUP_MAX_EPS = np.float32(1e-15)
BLOCK_BYTES = {"Q4_K": 144, "Q5_K": 176, "Q6_K": 210}
_CHUNK = 1 << 13  # super-blocks per vectorised step: 2M weights, temporaries of some 8 MB each

f32 = np.float32


def _nearest(v: np.ndarray) -> np.ndarray:
    """llama.cpp's nearest_int: round half to even of a float32 (its magic-number trick does just that);
    kept as float32, which holds every level exactly."""
    return np.rint(v)


def _sum(a: np.ndarray) -> np.ndarray:
    """Sum over the first axis: numpy adds row by row, so each column is summed left to right in float32
    as the C loops do (a pairwise sum differs in the last bit and so, rarely, in a rounding decision)."""
    return np.add.reduce(a, axis=0)


def _fp16(v: np.ndarray) -> np.ndarray:
    return v.astype(np.float16)


def _safe(v: np.ndarray, ok: np.ndarray) -> np.ndarray:
    return np.where(ok, v, f32(1))


def _make_qkx2(x, w, nmax: int, rmin: float, rdelta: float, nstep: int):
    """make_qkx2_quants over groups, one group a column of x (n, G): levels L in 0..nmax, scale and min
    with x ~ scale*L - min, the weighted squared error minimised over nstep+1 candidate inverse scales."""
    mn = np.minimum(x.min(0), f32(0))
    mx = x.max(0)
    sum_w, sum_x = _sum(w), _sum(w * x)
    flat = mx == mn
    span = _safe(mx - mn, ~flat)
    iscale = f32(nmax) / span
    scale = f32(1) / iscale
    L = np.clip(_nearest(iscale * (x - mn)), 0, nmax)
    d = scale * L + mn - x
    best = _sum(w * (d * d))
    for step in range(nstep + 1):
        # llama.cpp searches from the best min so far: both the span and the offset follow it
        span = _safe(mx - mn, ~flat)
        iscale = (f32(rmin) + f32(rdelta) * f32(step) + f32(nmax)) / span
        la = np.clip(_nearest(iscale * (x - mn)), 0, nmax)
        wl = w * la
        sum_l, sum_l2, sum_xl = _sum(wl), _sum(wl * la), _sum(wl * x)
        D = sum_w * sum_l2 - sum_l * sum_l
        ok = D > 0
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / _safe(D, ok)
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / _safe(D, ok)
        pos = this_min > 0
        this_min = np.where(pos, f32(0), this_min)
        this_scale = np.where(pos, sum_xl / _safe(sum_l2, sum_l2 > 0), this_scale)
        d = this_scale * la + this_min - x
        cur = _sum(w * (d * d))
        take = ok & (cur < best) & ~flat
        L = np.where(take, la, L)
        best = np.where(take, cur, best)
        scale = np.where(take, this_scale, scale)
        mn = np.where(take, this_min, mn)
    return np.where(flat, f32(0), L), np.where(flat, f32(0), scale), -mn


def _pack_scales(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """The 12 bytes of 6-bit scales and mins of a Q4_K/Q5_K super-block: (nb, 8) each to (nb, 12)."""
    s = np.zeros((ls.shape[0], 12), dtype=np.uint8)
    s[:, 0:4] = ls[:, 0:4] | ((ls[:, 4:8] >> 4) << 6)
    s[:, 4:8] = lm[:, 0:4] | ((lm[:, 4:8] >> 4) << 6)
    s[:, 8:12] = (ls[:, 4:8] & 0xF) | ((lm[:, 4:8] & 0xF) << 4)
    return s


def _qk(x: np.ndarray, nmax: int, rmin: float, nstep: int):
    """Q4_K / Q5_K's shared part for super-blocks x (nb, 256): (levels (nb, 256) uint8, d, dmin as
    float16 bytes (nb, 2) each, the packed scales (nb, 12))."""
    nb = x.shape[0]
    sub = np.ascontiguousarray(x.reshape(nb * 8, 32).T)  # (32, groups): a group a column
    av_x = np.sqrt(_sum(sub * sub) / f32(32))
    L, scales, mins = _make_qkx2(sub, av_x + np.abs(sub), nmax, rmin, 0.1, nstep)
    scales, mins = scales.reshape(nb, 8), mins.reshape(nb, 8)
    max_scale = np.maximum(scales.max(-1), f32(0))
    max_min = np.maximum(mins.max(-1), f32(0))
    inv_scale = np.where(max_scale > 0, f32(63) / _safe(max_scale, max_scale > 0), f32(0))
    inv_min = np.where(max_min > 0, f32(63) / _safe(max_min, max_min > 0), f32(0))
    # `uint8_t ls = nearest_int(...)`: the C conversion keeps the low byte
    ls = np.minimum(_nearest(inv_scale[:, None] * scales).astype(np.int32) & 0xFF, 63).astype(np.uint8)
    lm = np.minimum(_nearest(inv_min[:, None] * mins).astype(np.int32) & 0xFF, 63).astype(np.uint8)
    d, dmin = _fp16(max_scale / f32(63)), _fp16(max_min / f32(63))
    dj = (d.astype(f32)[:, None] * ls)[..., None]  # (nb, 8, 1)
    dm = (dmin.astype(f32)[:, None] * lm)[..., None]
    requant = np.clip(_nearest((x.reshape(nb, 8, 32) + dm) / _safe(dj, dj != 0)), 0, nmax)
    L = np.where(dj != 0, requant, L.T.reshape(nb, 8, 32)).reshape(nb, QK_K).astype(np.uint8)
    return L, d.view(np.uint8).reshape(nb, 2), dmin.view(np.uint8).reshape(nb, 2), _pack_scales(ls, lm)


def _halves(L: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each 64 weights as 32 pairs (weight l, weight l + 32): two (nb, 4, 32) arrays."""
    q = L.reshape(-1, 4, 2, 32)
    return q[:, :, 0, :], q[:, :, 1, :]


def _q4_k(x: np.ndarray) -> np.ndarray:
    L, d, dmin, scales = _qk(x, 15, -1.0, 20)
    lo, hi = _halves(L)
    return np.concatenate([d, dmin, scales, (lo | (hi << 4)).reshape(-1, 128)], 1)


def _q5_k(x: np.ndarray) -> np.ndarray:
    L, d, dmin, scales = _qk(x, 31, -0.5, 15)
    lo, hi = _halves(L)  # 64-weight chunk n sets bits 2n and 2n+1 of qh
    shifts = (2 * np.arange(4, dtype=np.uint8))[None, :, None]
    qh = np.bitwise_or.reduce((((lo >> 4) & 1) << shifts) | (((hi >> 4) & 1) << (shifts + 1)), axis=1)
    qs = ((lo & 0xF) | ((hi & 0xF) << 4)).reshape(-1, 128)
    return np.concatenate([d, dmin, scales, qh.astype(np.uint8), qs], 1)


def _make_qx_rmse1(x: np.ndarray, nmax: int):
    """make_qx_quants(n, nmax, x, L, rmse_type=1, NULL) over groups (columns of x): levels in 0..2*nmax-1
    and the scale."""
    ax = np.abs(x)
    mx = np.take_along_axis(x, ax.argmax(0)[None, :], 0)[0]  # the first largest |x|, with its sign
    zero = ax.max(0) < GROUP_MAX_EPS
    mx = _safe(mx, ~zero)
    w = x * x

    def fit(iscale):
        lv = np.clip(_nearest(iscale * x), -nmax, nmax - 1)
        return lv, _sum(w * x * lv), _sum(w * lv * lv)

    L, sumlx, suml2 = fit(f32(-nmax) / mx)
    scale = np.where(suml2 != 0, sumlx / _safe(suml2, suml2 != 0), f32(0))
    best = scale * sumlx
    for step in (*range(-9, 0), *range(1, 10)):
        lv, sumlx, suml2 = fit(-(f32(nmax) + f32(0.1) * f32(step)) / mx)
        take = (suml2 > 0) & (sumlx * sumlx > best * suml2)
        L = np.where(take, lv, L)
        scale = np.where(take, sumlx / _safe(suml2, suml2 > 0), scale)
        best = np.where(take, scale * sumlx, best)
    return np.where(zero, f32(0), L + nmax), np.where(zero, f32(0), scale)


def _q6_k(x: np.ndarray) -> np.ndarray:
    nb = x.shape[0]
    L, scales = _make_qx_rmse1(np.ascontiguousarray(x.reshape(nb * 16, 16).T), 32)
    L, scales = L.T.reshape(nb, 16, 16), scales.reshape(nb, 16)
    first = np.abs(scales).argmax(-1)[:, None]  # the first largest |scale|, with its sign
    max_scale = np.take_along_axis(scales, first, -1)[:, 0]
    zero = np.abs(max_scale) < GROUP_MAX_EPS
    iscale = f32(-128) / _safe(max_scale, ~zero)
    d = _fp16(f32(1) / iscale)
    sc = np.minimum(_nearest(iscale[:, None] * scales), 127).astype(np.int8)
    dj = (d.astype(f32)[:, None] * sc)[..., None]
    requant = np.clip(_nearest(x.reshape(nb, 16, 16) / _safe(dj, dj != 0)), -32, 31) + 32
    L = np.where(dj != 0, requant, L).reshape(nb, 2, 4, 32).astype(np.uint8)  # 2 halves of 4 x 32
    q = [L[:, :, k] for k in range(4)]
    ql = np.concatenate([q[0] & 0xF | (q[2] & 0xF) << 4, q[1] & 0xF | (q[3] & 0xF) << 4], 2)
    qh = (q[0] >> 4) | (q[1] >> 4) << 2 | (q[2] >> 4) << 4 | (q[3] >> 4) << 6
    d2 = d.view(np.uint8).reshape(nb, 2)
    out = np.concatenate([ql.reshape(nb, 128), qh.reshape(nb, 64), sc.view(np.uint8), d2], 1)
    out[zero] = 0  # an all-zero super-block: every byte 0, as llama.cpp's memset
    return out


_QUANTISERS = {"Q4_K": _q4_k, "Q5_K": _q5_k, "Q6_K": _q6_k}


def quantize_k(data: np.ndarray, qtype: str) -> np.ndarray:
    """A 2-D float tensor as llama.cpp stores it in `qtype` (Q4_K, Q5_K or Q6_K): uint8 of shape
    (rows, row bytes), the layout gguf-py's quantize returns. Rows must be a multiple of 256 long."""
    rows, n = data.shape
    if n % QK_K:
        raise ValueError(f"{qtype} needs rows of a multiple of {QK_K} weights, not {n}")
    blocks = np.ascontiguousarray(data, dtype=f32).reshape(-1, QK_K)
    fn = _QUANTISERS[qtype]
    out = np.concatenate([fn(blocks[i : i + _CHUNK]) for i in range(0, len(blocks), _CHUNK)])
    return out.reshape(rows, n // QK_K * BLOCK_BYTES[qtype])


# the tensor types of a llama-quantize file type, per tensor (llama.cpp src/llama-quant.cpp,
# llama_tensor_get_type for a Llama without experts and without an importance matrix)
DEFAULT_TYPE = {"q4_0": "Q4_0", "q4_k_m": "Q4_K", "q5_k_m": "Q5_K"}
BLOCK = {"Q4_0": 32, "Q5_0": 32, "Q5_1": 32, "Q8_0": 32, "Q4_K": QK_K, "Q5_K": QK_K, "Q6_K": QK_K}
# a row length that a K-quant cannot take gets a 32-weight type of about the same size (SmolLM2's 576-wide
# rows: all but ffn_down), and one that no block fits stays f16 (tensor_type_fallback)
FALLBACK = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}


def _more_bits(layer: int, n_layer: int) -> bool:
    """llama.cpp's use_more_bits: the first and last eighth of the layers and every third in between."""
    return layer < n_layer // 8 or layer >= 7 * n_layer // 8 or (layer - n_layer // 8) % 3 == 2


def llama_quant_type(ftype: str, role: str, layer: int, n_layer: int, ncols: int, tied: bool) -> str:
    """The tensor type llama-quantize gives one 2-D tensor of a Llama for `ftype` (q4_0, q4_k_m, q5_k_m).

    role: 'output', 'token_embd', 'attn_v', 'ffn_down' or anything else; layer: its block (-1 outside);
    ncols: its row length (ggml's ne[0], the input width); tied: no output.weight, token_embd is the head.
    The output head (or a tied token_embd) gets Q6_K, as the answer hangs on it; in the _M mixes, attn_v
    and ffn_down get Q6_K in the layers _more_bits picks. Then the row length decides the fallback."""
    default = DEFAULT_TYPE[ftype]
    qtype = default
    if role == "output" or (tied and role == "token_embd"):
        qtype = "Q8_0" if ncols % BLOCK[default] else "Q6_K"
    elif role in ("attn_v", "ffn_down") and ftype in ("q4_k_m", "q5_k_m") and _more_bits(layer, n_layer):
        qtype = "Q6_K"
    if ncols % BLOCK[qtype]:
        qtype = FALLBACK.get(qtype, qtype)
        if ncols % BLOCK[qtype]:
            qtype = "F16"
    return qtype
