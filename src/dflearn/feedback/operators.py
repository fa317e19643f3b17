"""Feedback operators: the maps from the output error e (N, *S, d_L) to the signal
g_i at every feedback point. Rules compose these; each holds its state in
buffers or parameters, created when the rule is built, so `state_dict` has it all.

Every operator acts per row of `Layout.error_rows(e)` (one row per sample and
position) and gives each point its rows back in the point's shape, so one B_i
serves every position (see `layout`).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import DflearnError
from .layout import Layout, Point


def _shaped(rows: torch.Tensor, e: torch.Tensor, point: Point) -> torch.Tensor:
    """A point's signal rows (N prod(S), n) as a tensor of the point's shape (N, *P)."""
    return rows.reshape(e.shape[0], *point.shape)


class DenseFeedback(nn.Module):
    """B_i (n_i, d_L) for every chosen point, stored stacked in one (sum n_i, d_L)
    tensor (one state_dict entry); g_i = e B_i^T is one matmul per point on a view.
    Fixed (a buffer) or learned (a parameter)."""

    def __init__(self, layout: Layout, points: list[int], learned: bool = False,
                 init: str | list[torch.Tensor] = "kaiming", generator: torch.Generator | None = None):
        super().__init__()
        self.layout, self.points = layout, list(points)
        rows = sum(layout.points[i].features for i in self.points)
        B = torch.empty(rows, layout.num_outputs)
        if isinstance(init, list):  # given per point, each (n_i, d_L)
            B.copy_(torch.cat(init, dim=0))
        elif init == "kaiming":  # U(-1/sqrt(d_L), 1/sqrt(d_L)): Kaiming-uniform, fan-in d_L
            bound = 1 / math.sqrt(layout.num_outputs)
            B.uniform_(-bound, bound, generator=generator)
        elif init == "kaiming_n":  # the DKP reference's torch.nn.init.kaiming_uniform_ on a (d_L, n_i)
            start = 0  # tensor: fan-in n_i, gain sqrt(2), so U(-sqrt(6/n_i), sqrt(6/n_i)) per point
            for i in self.points:
                n = layout.points[i].features
                B[start:start + n].uniform_(-math.sqrt(6 / n), math.sqrt(6 / n), generator=generator)
                start += n
        elif init == "zeros":
            B.zero_()
        else:
            raise DflearnError(f"unknown feedback init '{init}'; choose kaiming, kaiming_n, product or zeros")
        if learned:
            self.B = nn.Parameter(B)
        else:
            self.register_buffer("B", B)

    def matrix(self, k: int) -> torch.Tensor:
        """B_k (n, d_L) of the k-th chosen point, a view into the stacked matrix."""
        start = sum(self.layout.points[i].features for i in self.points[:k])
        return self.B[start:start + self.layout.points[self.points[k]].features]

    def matrices(self) -> list[torch.Tensor]:
        return [self.matrix(k) for k in range(len(self.points))]

    def project(self, e: torch.Tensor) -> list[torch.Tensor]:
        """g_i = e B_i^T per point, per position."""
        rows = self.layout.error_rows(e)
        B = self.B.detach()
        out, start = [], 0
        for i in self.points:
            point = self.layout.points[i]
            out.append(_shaped(rows @ B[start:start + point.features].t(), e, point))
            start += point.features
        return out


class SparseFeedback(nn.Module):
    """Sparse B_i: every unit of every chosen point reads exactly k outputs.

    Stored as indices (n, k) and values (n, k), stacked over points; the signal
    of unit u is sum_j e[:, idx[u, j]] * val[u, j]: O(N n k), never O(N n d_L).
    """

    def __init__(self, layout: Layout, points: list[int], k: int, rank: int | None = None,
                 generator: torch.Generator | None = None):
        super().__init__()
        d = layout.num_outputs
        if not 1 <= k <= d:
            raise DflearnError(f"sdfa: k must be between 1 and the number of outputs ({d}), got {k}")
        if rank is not None and not (isinstance(rank, int) and 1 <= rank <= d and k * rank >= d):
            raise DflearnError(f"sdfa: rank must be an integer from 1 to the number of outputs ({d}) with "
                               f"k x rank >= {d}, so that every output reaches some unit; got rank {rank} "
                               f"with k={k}")
        self.layout, self.points, self.k, self.rank = layout, list(points), k, rank
        idx, val = [], []
        for i in self.points:
            n = layout.points[i].features
            scale = (d * k) ** 0.25 / math.sqrt(n)  # (ref) s = (d_L k)^(1/4) / sqrt(n_i)
            if rank is None:
                # k distinct outputs per unit, uniformly at random
                choice = torch.rand(n, d, generator=generator).argsort(dim=1)[:, :k]
                v = torch.empty(n, k).uniform_(-scale, scale, generator=generator)
            else:
                if n < rank:
                    raise DflearnError(f"sdfa: rank {rank} needs at least {rank} units at feedback point "
                                       f"'{layout.points[i].name}', which has {n}")
                choice, v = _low_rank_sparse(n, d, k, rank, scale, generator)
            idx.append(choice)
            val.append(v)
        self.register_buffer("index", torch.cat(idx))
        self.register_buffer("value", torch.cat(val))

    def dense(self) -> torch.Tensor:
        """The stacked (sum n_i, d_L) matrix this operator represents (for tests and diagnostics)."""
        B = self.value.new_zeros(len(self.index), self.layout.num_outputs)
        return B.scatter_(1, self.index, self.value)

    def project(self, e: torch.Tensor) -> list[torch.Tensor]:
        """Per row (sample, position): g[u] = sum_j e[idx[u, j]] val[u, j]."""
        # one index_select of whole columns per j < k: a plain gather, O(N n) each and
        # independent of d_L (advanced indexing e[:, index] was ~50x slower on CPU)
        rows = self.layout.error_rows(e)
        index, value = self.index.t().contiguous(), self.value.t().contiguous()
        flat = rows.index_select(1, index[0]) * value[0]
        for j in range(1, self.k):
            flat.addcmul_(rows.index_select(1, index[j]), value[j])
        sizes = [self.layout.points[i].features for i in self.points]
        return [_shaped(g, e, self.layout.points[i]) for i, g in zip(self.points, flat.split(sizes, dim=1))]

    def matrices(self) -> list[torch.Tensor]:
        """The dense B_i (n_i, d_L) of each chosen point."""
        return list(self.dense().split([self.layout.points[i].features for i in self.points]))


def _balanced_sets(d: int, k: int, rank: int, generator) -> torch.Tensor:
    """(rank, k) index sets of k distinct outputs each, balanced: each set takes, at
    random, k of the outputs chosen least often so far, so every output is chosen
    floor(k rank / d) or ceil(k rank / d) times (every one at least once, since
    k rank >= d). The reference draws each set with weights favouring the outputs
    it lacks, which balances only on average and can leave an output out."""
    counts = torch.zeros(d, dtype=torch.long)
    sets = []
    for _ in range(rank):
        perm = torch.randperm(d, generator=generator)
        pick = perm[counts[perm].argsort(stable=True)][:k]  # least-chosen first, random among ties
        counts[pick] += 1
        sets.append(pick.sort().values)
    return torch.stack(sets)


def _low_rank_sparse(n: int, d: int, k: int, rank: int, scale: float, generator):
    """The reference construction of a sparse B of rank r (bcrafton/ssdfa, FeedbackMatrix):
    r balanced index sets S_r of k outputs; every unit reads one set, so that
    B = sum_r mask_r * (u_r v_r^T), whose rows for the units of set r are multiples of
    v_r restricted to S_r: rank r exactly when those r restricted vectors are independent
    (checked; redrawn otherwise) and every set has a unit (units are dealt to the sets
    in turn, in a random order). u, v uniform in (-s, s); then the whole B, zeros
    included, is rescaled to standard deviation s, as the reference does."""
    for _ in range(20):
        sets = _balanced_sets(d, k, rank, generator)
        v = torch.empty(rank, d).uniform_(-scale, scale, generator=generator)
        restricted = torch.zeros(rank, d).scatter_(1, sets, v.gather(1, sets))
        if torch.linalg.matrix_rank(restricted.double()) == rank:
            break
    else:
        raise DflearnError(f"sdfa: could not draw {rank} independent index sets of {k} of {d} outputs; "
                           f"use another rank or k")
    owner = torch.randperm(n, generator=generator) % rank  # set of each unit, balanced
    u = torch.empty(n).uniform_(-scale, scale, generator=generator)
    choice = sets[owner]  # (n, k)
    values = u[:, None] * v[owner].gather(1, choice)
    # std of the dense (n, d) matrix, zeros included (np.std: the population std)
    total = n * d
    mean = values.sum() / total
    std = ((values.pow(2).sum() / total - mean ** 2).clamp_min(0)).sqrt().clamp_min(1e-12)
    return choice, values * (scale / std)


class LinearLocal(nn.Module):
    """A LAS/LTAS local module: y_i = M_i h_i (no bias), per position when the point has
    the output's positions ((N, *S, n) -> (N, *S, d_L)), else on the whole flattened point."""

    def __init__(self, point: Point, num_outputs: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_outputs, point.features))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # as nn.Linear
        self.shape, self.lead = point.shape, len(point.positions)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h.flatten(1 + self.lead) @ self.weight.t()

    def vjp(self, e: torch.Tensor) -> torch.Tensor:
        """e^T dM/dh = e M (at any h: M is linear), reshaped to the point."""
        return (e @ self.weight.detach()).reshape(len(e), *self.shape)

    def macs(self) -> int:
        """Per-sample MACs of one forward: d_L x n at each position."""
        return self.weight.numel() * math.prod(self.shape[:self.lead])


class ConvLocal(nn.Module):
    """A LAS/LTAS local module on a (C, H, W) point: a conv with d_L planes, then
    global average pooling (seed 001, Figure 3). Trained and differentiated
    through the same pooling, so the signal is the true VJP of what was trained.

    The VJP in closed form. With y[n, o] = mean_{p,q} sum_{c,a,b} W[o,c,a,b]
    h[n, c, s p - pad + d a, s q - pad + d b] over the H_o x W_o output positions,

        g[n, c, i, j] = sum_{a,b} R[i, a] v[n, c, a, b] C[j, b],
        v = (e W) / (H_o W_o)   (v[n,c,a,b] = sum_o e[n,o] W[o,c,a,b] / (H_o W_o)),

    where R[i, a] = 1 if some output row p has s p - pad + d a = i (tap a of the
    kernel reaches input row i), else 0, and C likewise for columns. Flattened,
    g[n, c] = (R kron C) v[n, c]: one (N C, k^2) x (k^2, H W) matmul after the
    (N, d_L) x (d_L, C k^2) one, O(N C k^2 (d_L + H W)) instead of the transposed
    convolution's O(N d_L C H W k^2) (the cotangent of the
    pooling is the same at every output position, so only which taps reach which
    input row/column matters). Equal to `torch.nn.grad.conv2d_input` of the spread
    cotangent (tests/test_conv_vjp.py).
    """

    def __init__(self, point: Point, num_outputs: int, kernel_size: int = 3, stride: int = 1,
                 padding: int | None = None):
        super().__init__()
        channels = point.shape[0]
        padding = kernel_size // 2 if padding is None else padding  # default: reads every position of h_i
        self.conv = nn.Conv2d(channels, num_outputs, kernel_size, stride, padding, bias=False)
        self.shape = point.shape
        H, W = point.shape[1:]
        out = _conv_out(self.conv, H, W)
        self.positions = out[0] * out[1]
        # not persistent: derived from the shapes, so state_dict (and checkpoints) stay as they were
        rows, cols = _taps_reaching(H, out[0], self.conv, 0), _taps_reaching(W, out[1], self.conv, 1)
        self.register_buffer("reach", torch.kron(rows, cols), persistent=False)  # (H W, k_h k_w)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """mean_{p,q} conv(h)[n, o, p, q] = sum_{c,t} W[o, c, t] S[n, c, t] with
        S[n, c, t] = sum_{ij} (R kron C)[ij, t] h[n, c, ij] / (H_o W_o): each tap t sees the
        sum of the inputs it reaches. Two matmuls, O(N C H W k^2 + N C k^2 d_L), instead of
        a convolution with d_L planes at every position (and autograd's weight gradient
        follows suit); equal to conv + mean (tests/test_conv_vjp.py)."""
        taps = h.flatten(2) @ self.reach.to(h.dtype)  # (N, C, k_h k_w)
        return taps.flatten(1) @ self.conv.weight.flatten(1).t() / self.positions

    def vjp(self, e: torch.Tensor) -> torch.Tensor:
        """e^T dM/dh at any h (M is linear in h): (R kron C) (e W) / (H_o W_o) per sample and channel.
        Measured on Conv3's local modules (batch 64, 1 thread): 4-9x faster than the transposed conv."""
        weight = self.conv.weight.detach()
        v = (e @ weight.flatten(1)).view(-1, weight.shape[2] * weight.shape[3])
        g = v @ self.reach.to(v.dtype).t()
        return g.view(len(e), *self.shape) / self.positions

    def macs(self) -> int:
        """Per-sample MACs of the module it is (a d_L-plane conv and the mean), whatever the
        closed form computes: positions x d_L x C x k^2."""
        return self.positions * self.conv.weight.numel()


def _taps_reaching(n: int, n_out: int, conv: nn.Conv2d, axis: int) -> torch.Tensor:
    """(n, k) 0/1 matrix: tap a of the kernel along `axis` reaches input index i
    from some output position p (i = stride p - padding + dilation a)."""
    k, s = conv.kernel_size[axis], conv.stride[axis]
    pad, d = conv.padding[axis], conv.dilation[axis]
    reach = torch.zeros(n, k)
    for a in range(k):
        for p in range(n_out):
            i = s * p - pad + d * a
            if 0 <= i < n:
                reach[i, a] = 1.0
    return reach


def _conv_out(conv: nn.Conv2d, H: int, W: int) -> tuple[int, int]:
    def size(n, k, s, p, d):
        return (n + 2 * p - d * (k - 1) - 1) // s + 1
    return (size(H, conv.kernel_size[0], conv.stride[0], conv.padding[0], conv.dilation[0]),
            size(W, conv.kernel_size[1], conv.stride[1], conv.padding[1], conv.dilation[1]))


def local_module(point: Point, num_outputs: int, kernel_size: int = 3) -> nn.Module:
    """The local module a point calls for: conv on maps (C, H, W) under an output without
    positions, linear otherwise (per position where the point has the output's positions)."""
    if len(point.shape) == 3 and not point.positions:
        return ConvLocal(point, num_outputs, kernel_size)
    return LinearLocal(point, num_outputs)
