"""Optimizer, parameter groups and the learning-rate / momentum schedule.

Ultralytics builds three parameter groups: decayed weights (conv kernels), BatchNorm weights and all
biases (no decay). The v8-era group order, which the ``lr/pg0..2`` columns follow, is
pg0 = biases, pg1 = decayed weights, pg2 = BN weights ([current]: weights, BN, biases). MuSGD splits each
group once more: the Detect head's class branch trains at three times the group's lr.

The schedule is a pure function of the global iteration ``ni`` so that it can run inside the jitted
step (no host round trip): during warmup (``ni <= nw``) lr ramps linearly from 0 (biases: from
``warmup_bias_lr``) to ``lr0 * lf(epoch)`` and momentum from ``warmup_momentum`` to ``momentum``; then
every epoch trains at ``lr0 * lf(epoch)`` (8.2.103 steps the scheduler at the start of each epoch).
"""
from __future__ import annotations

import functools
import math

import flax
from typing import Any

import jax
import jax.numpy as jnp
import optax

GROUPS_V8 = ("bias", "weight", "bn")  # pg0, pg1, pg2 in 8.2.103
GROUPS_CURRENT = ("weight", "bn", "bias")
# torch param groups with a ``momentum`` key (the warmup moves it); the Adam family has ``betas`` instead
MOMENTUM_OPTIMIZERS = ("SGD", "RMSProp", "MuSGD")
OPTIMIZERS = ("SGD", "Adam", "Adamax", "AdamW", "NAdam", "RAdam", "RMSProp", "MuSGD")
MUSGD_MUON, MUSGD_SGD = 0.2, 1.0  # MuSGD's scale of the orthogonalised and of the SGD step
MUSGD_BOOST = 3.0  # MuSGD trains the Detect head's class branch (cv3) at this multiple of every group's lr


def param_group_labels(params, frozen_layers: tuple[int, ...] = ()) -> Any:
    """Label each parameter leaf: 'bias', 'weight', 'bn' or 'frozen' (layer index in ``frozen_layers``)."""

    def label(kp, _):
        path = [k.key for k in kp]
        layer = int(path[0].split("_")[1]) if path[0].startswith("model_") else -1
        if layer in frozen_layers:
            return "frozen"
        if path[-1] == "bias":
            return "bias"
        if path[-2] == "bn":
            return "bn"
        return "weight"

    return jax.tree_util.tree_map_with_path(label, params)


def boosted_labels(labels) -> Any:
    """MuSGD's groups: each label of the Detect head's class branch (the last layer's ``cv3_*`` leaves) becomes
    '<label>_boost', trained at ``MUSGD_BOOST`` times the group's lr; 'frozen' stays frozen."""
    layers = [int(kp[0].key.split("_")[1]) for kp, _ in jax.tree_util.tree_leaves_with_path(labels)
              if kp[0].key.startswith("model_")]
    head = f"model_{max(layers)}" if layers else None

    def relabel(kp, label):
        path = [k.key for k in kp]
        in_cls_branch = path[0] == head and len(path) > 1 and path[1].startswith("cv3_")
        return f"{label}_boost" if in_cls_branch and label != "frozen" else label

    return jax.tree_util.tree_map_with_path(relabel, labels)


def auto_optimizer(nc: int, iterations: int, compat: str = "v8") -> tuple[str, float, float]:
    """``optimizer=auto``: for long runs (> 10000 iterations) SGD(0.01, 0.9) ([current]: MuSGD(0.01, 0.9)),
    else AdamW(lr_fit, 0.9) with lr_fit = round(0.002 * 5 / (4 + nc), 6)."""
    if iterations > 10000:
        return ("SGD" if compat == "v8" else "MuSGD"), 0.01, 0.9
    return "AdamW", round(0.002 * 5 / (4 + nc), 6), 0.9


def _bias_correction(decay: float, count):
    """1 - decay ** count, accurate in float32 for decay near 1 (where the power rounds away the difference)."""
    return -jnp.expm1(count.astype(jnp.float32) * math.log(decay))


def _adam_moments(grads, m, v, b1, b2: float):
    """torch's Adam moments: m lerps towards g by 1 - b1, v = b2 * v + (1 - b2) * g^2."""
    m = jax.tree.map(lambda g, mi: mi + (1.0 - b1) * (g - mi), grads, m)
    return m, jax.tree.map(lambda g, vi: b2 * vi + (1.0 - b2) * g * g, grads, v)


def _scale_by_adam_torch(b1, b2: float, eps: float) -> optax.GradientTransformation:
    """torch Adam's direction d = (m / (1 - b1 ** t)) / (sqrt(v) / sqrt(1 - b2 ** t) + eps). State: (count, m, v)."""

    def init(params):
        return (jnp.zeros([], jnp.int32), jax.tree.map(jnp.zeros_like, params), jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params=None):
        count, m, v = state
        count = count + 1
        m, v = _adam_moments(grads, m, v, b1, b2)
        bc1, bc2_sqrt = 1.0 - b1 ** count.astype(jnp.float32), jnp.sqrt(_bias_correction(b2, count))
        return jax.tree.map(lambda mi, vi: (mi / bc1) / (jnp.sqrt(vi) / bc2_sqrt + eps), m, v), (count, m, v)

    return optax.GradientTransformation(init, update)


def _scale_by_nadam_torch(b1, b2: float, eps: float, momentum_decay: float = 0.004) -> optax.GradientTransformation:
    """torch NAdam's direction: momentum mu_t = b1 * (1 - 0.5 * 0.96 ** (t * momentum_decay)) and its running
    product P_t, d = (1 - mu_t) / (1 - P_t) * g / den + mu_{t+1} / (1 - P_t * mu_{t+1}) * m / den with
    den = sqrt(v / (1 - b2 ** t)) + eps (m, v: Adam's moments with b1, b2). State: (count, mu_product, m, v)."""

    def init(params):
        return (jnp.zeros([], jnp.int32), jnp.ones([], jnp.float32), jax.tree.map(jnp.zeros_like, params),
                jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params=None):
        count, mu_product, m, v = state
        count = count + 1
        t = count.astype(jnp.float32)
        mu = b1 * (1.0 - 0.5 * 0.96 ** (t * momentum_decay))
        mu_next = b1 * (1.0 - 0.5 * 0.96 ** ((t + 1.0) * momentum_decay))
        mu_product = mu_product * mu
        m, v = _adam_moments(grads, m, v, b1, b2)
        bc2 = _bias_correction(b2, count)
        c_grad = (1.0 - mu) / (1.0 - mu_product)
        c_mom = mu_next / (1.0 - mu_product * mu_next)

        def direction(g, mi, vi):
            den = jnp.sqrt(vi / bc2) + eps
            return c_grad * g / den + c_mom * mi / den

        return jax.tree.map(direction, grads, m, v), (count, mu_product, m, v)

    return optax.GradientTransformation(init, update)


def _scale_by_radam_torch(b1, b2: float, eps: float) -> optax.GradientTransformation:
    """torch RAdam's direction: m_hat = m / (1 - b1 ** t); while rho_t = rho_inf - 2 t b2^t / (1 - b2^t) is at
    most 5, d = m_hat; above, d = m_hat * r_t * sqrt(1 - b2^t) / (sqrt(v) + eps) with the rectification
    r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t)). State: (count, m, v)."""
    rho_inf = 2.0 / (1.0 - b2) - 1.0

    def init(params):
        return (jnp.zeros([], jnp.int32), jax.tree.map(jnp.zeros_like, params), jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params=None):
        count, m, v = state
        count = count + 1
        t = count.astype(jnp.float32)
        m, v = _adam_moments(grads, m, v, b1, b2)
        bc1, bc2 = 1.0 - b1 ** t, _bias_correction(b2, count)
        rho_t = rho_inf - 2.0 * t * (1.0 - bc2) / bc2
        rect = jnp.sqrt(jnp.maximum((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                                    / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t), 0.0))
        rectified = rho_t > 5.0

        def direction(mi, vi):
            m_hat = mi / bc1
            return jnp.where(rectified, m_hat * rect * jnp.sqrt(bc2) / (jnp.sqrt(vi) + eps), m_hat)

        return jax.tree.map(direction, m, v), (count, m, v)

    return optax.GradientTransformation(init, update)


def newton_schulz(g: jax.Array, transpose: bool, eps: float = 1e-7) -> jax.Array:
    """Approximate orthogonalisation U V^T of ``g`` (rows, cols), as MuSGD computes it: bfloat16 throughout
    (products accumulate in float32, each result rounds to bfloat16), ``g`` scaled to Frobenius norm 1, then five
    quintic Newton-Schulz steps X <- a X + (b A + c A A) X with A = X X^T, on g^T where ``transpose`` (the same
    map mathematically, not in bfloat16: see ``transposed_batches``). Returns bfloat16 (rows, cols)."""
    bf16, f32 = jnp.bfloat16, jnp.float32
    mm = functools.partial(jnp.matmul, preferred_element_type=f32)
    x = g.astype(bf16)
    norm = jnp.sqrt(jnp.sum(jnp.square(x.astype(f32)))).astype(bf16)
    x = (x.astype(f32) / (norm.astype(f32) + eps).astype(bf16).astype(f32)).astype(bf16)
    if transpose:
        x = x.T
    a, b, c = 3.4445, -4.7750, 2.0315
    for _ in range(5):
        A = mm(x, x.T).astype(bf16)
        B = (b * A.astype(f32) + c * mm(A, A)).astype(bf16)
        x = (a * x.astype(f32) + mm(B, x)).astype(bf16)
    return x.T if transpose else x


def torch_matrix(shape: tuple[int, ...]) -> tuple[int, int, float]:
    """(rows, cols, scale) of the matrix MuSGD orthogonalises for a flax kernel of ``shape``: a conv kernel
    (kh, kw, cin, cout) stands for torch's (cout, cin, kh, kw) weight, flattened to (cout, cin*kh*kw); a dense
    kernel (in, out) for (out, in). scale = sqrt(max(1, a / b)) of the torch weight's last two dims (a, b)."""
    if len(shape) == 4:
        kh, kw, cin, cout = shape
        return cout, cin * kh * kw, max(1.0, kh / kw) ** 0.5
    n_in, n_out = shape
    return n_out, n_in, max(1.0, n_out / n_in) ** 0.5


def transposed_batches(matrices: list[tuple[int, int, float]]) -> list[bool]:
    """For each (rows, cols, scale) of one param group: whether torch's MuSGD runs its Newton-Schulz transposed.
    It orthogonalises the matrices of equal (cols, scale) in one batch, rows zero-padded to the batch's largest
    (zero rows change nothing), splits a batch where its row counts span more than 16x, and transposes a whole
    batch when its padded rows exceed its columns."""
    flags = [False] * len(matrices)
    buckets: dict[tuple[int, float], list[tuple[int, int]]] = {}
    for i, (rows, cols, scale) in enumerate(matrices):
        buckets.setdefault((cols, scale), []).append((rows, i))
    for (cols, _), items in buckets.items():
        items.sort(key=lambda item: -item[0])
        start = 0
        for j in range(1, len(items) + 1):
            if j == len(items) or items[start][0] > 16 * items[j][0]:
                for _, i in items[start:j]:
                    flags[i] = items[start][0] > cols
                start = j
    return flags


def muon_direction(update: jax.Array, transpose: bool) -> jax.Array:
    """MuSGD's orthogonalised step for a flax kernel (``torch_matrix``), scaled, in the kernel's layout."""
    rows, _, scale = torch_matrix(update.shape)
    if update.ndim == 4:
        torch_w = jnp.transpose(update, (3, 2, 0, 1))
        o = newton_schulz(torch_w.reshape(rows, -1), transpose).astype(update.dtype).reshape(torch_w.shape)
        return jnp.transpose(o, (2, 3, 1, 0)) * scale
    return newton_schulz(update.T, transpose).astype(update.dtype).T * scale


def _musgd(learning_rate, momentum, weight_decay) -> optax.GradientTransformation:
    """MuSGD for one group: 2-D and 4-D parameters first take the Muon step p -= lr * MUSGD_MUON * O(u), where
    buf_m = mu * buf_m + (1 - mu) * g and u = mu * buf_m + (1 - mu) * g (Nesterov), then every parameter takes
    torch's Nesterov SGD step (lr * MUSGD_SGD for the Muon ones; their decay reads the already moved weights).
    State: (Muon buffers (they stay zero for parameters of other ranks), SGD buffers)."""

    def init(params):
        return (jax.tree.map(jnp.zeros_like, params), jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params):
        g_leaves, treedef = jax.tree.flatten(grads)
        p_leaves, m_leaves, s_leaves = (treedef.flatten_up_to(t) for t in (params, *state))
        muon = [i for i, g in enumerate(g_leaves) if g.ndim in (2, 4)]
        transpose = dict(zip(muon, transposed_batches([torch_matrix(g_leaves[i].shape) for i in muon])))
        out = []
        for i, (g, p, buf_m, buf_s) in enumerate(zip(g_leaves, p_leaves, m_leaves, s_leaves)):
            lr, q = learning_rate, p
            if i in transpose:
                buf_m = momentum * buf_m + (1.0 - momentum) * g
                q = p - (lr * MUSGD_MUON) * muon_direction(momentum * buf_m + (1.0 - momentum) * g, transpose[i])
                lr = lr * MUSGD_SGD
            d = g + weight_decay * q
            buf_s = momentum * buf_s + d
            out.append((q - lr * (d + momentum * buf_s) - p, buf_m, buf_s))
        updates, bufs_m, bufs_s = (treedef.unflatten(list(x)) for x in zip(*out))
        return updates, (bufs_m, bufs_s)

    return optax.GradientTransformation(init, update)


def _momentum_optimizer(name: str, learning_rate, momentum, weight_decay) -> optax.GradientTransformation:
    """One group of an optimizer whose torch param group has a ``momentum`` key (the warmup moves it)."""
    if name == "SGD":  # torch: g += wd*p; buf = mu*buf + g; p -= lr*(g + mu*buf)
        return optax.chain(optax.add_decayed_weights(weight_decay),
                           optax.trace(decay=momentum, nesterov=True), optax.scale_by_learning_rate(learning_rate))
    if name == "RMSProp":  # torch RMSprop(alpha 0.99, eps 1e-8 outside the sqrt, momentum), no bias correction
        return optax.chain(optax.add_decayed_weights(weight_decay),
                           optax.scale_by_rms(decay=0.99, eps=1e-8, eps_in_sqrt=False, bias_correction=False),
                           optax.trace(decay=momentum), optax.scale_by_learning_rate(learning_rate))
    return _musgd(learning_rate, momentum, weight_decay)


def _adam_optimizer(name: str, learning_rate, b1, weight_decay) -> optax.GradientTransformation:
    """One group of the Adam family: betas (b1, 0.999), eps 1e-8; no ``momentum`` key, so b1 stays at its built
    value through the warmup. AdamW decays decoupled (p *= 1 - lr*wd), the others add wd*p to the gradient."""
    if name == "AdamW":
        return optax.chain(_scale_by_adam_torch(b1, 0.999, 1e-8), optax.add_decayed_weights(weight_decay),
                           optax.scale_by_learning_rate(learning_rate))
    if name == "Adam":
        inner = _scale_by_adam_torch(b1, 0.999, 1e-8)
    elif name == "Adamax":  # u = max(b2*u, |g| + eps)
        inner = optax.scale_by_adamax(b1=b1, b2=0.999, eps=1e-8)
    elif name == "NAdam":
        inner = _scale_by_nadam_torch(b1, 0.999, 1e-8)
    else:
        inner = _scale_by_radam_torch(b1, 0.999, 1e-8)
    return optax.chain(optax.add_decayed_weights(weight_decay), inner, optax.scale_by_learning_rate(learning_rate))


def build_optimizer(name: str, *, lr0: float, momentum: float, weight_decay: float, labels) -> optax.GradientTransformation:
    """Three groups (decay only on 'weight'), frozen parameters never change; lr (and, for ``MOMENTUM_OPTIMIZERS``,
    momentum) injectable. MuSGD splits each group into the Detect head's class branch and the rest
    (``boosted_labels``).

    The same arguments give the same transformation object, so a second run in one process (a notebook, the
    test suite) finds its train step already traced and compiled instead of tracing it again."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer={name!r} is not one of {OPTIMIZERS + ('auto',)}.")
    if name == "MuSGD":
        labels = boosted_labels(labels)
    leaves, treedef = jax.tree_util.tree_flatten(labels)
    return _build_optimizer(name, float(lr0), float(momentum), float(weight_decay), tuple(leaves), treedef)


@functools.lru_cache(maxsize=16)
def _build_optimizer(name, lr0, momentum, weight_decay, label_leaves, label_treedef):
    labels = jax.tree_util.tree_unflatten(label_treedef, label_leaves)
    txs = {}
    boosted = sorted(g for g in set(label_leaves) if g.endswith("_boost"))
    for group in ["bias", "weight", "bn", *boosted]:
        wd = weight_decay if group.startswith("weight") else 0.0
        lr = lr0 * (MUSGD_BOOST if group.endswith("_boost") else 1.0)
        if name in MOMENTUM_OPTIMIZERS:  # MuSGD's BN weights and biases take plain SGD steps
            rule = "SGD" if name == "MuSGD" and not group.startswith("weight") else name
            tx = optax.inject_hyperparams(_momentum_optimizer, static_args=("name",))(
                name=rule, learning_rate=lr, momentum=momentum, weight_decay=wd)
        else:
            tx = optax.inject_hyperparams(_adam_optimizer, static_args=("name",))(
                name=name, learning_rate=lr, b1=momentum, weight_decay=wd)
        txs[group] = tx
    txs["frozen"] = optax.set_to_zero()
    return optax.multi_transform(txs, labels)


def set_hyperparams(opt_state, lrs: dict[str, jax.Array], momentum: jax.Array):
    """Return ``opt_state`` with each group's learning rate replaced (``lrs``: 'bias', 'weight', 'bn' and for
    MuSGD their '_boost' groups) and the momentum of groups that have one (``MOMENTUM_OPTIMIZERS``)."""
    inner = dict(opt_state.inner_states)
    for group, masked in opt_state.inner_states.items():
        if group == "frozen":
            continue
        hp = dict(masked.inner_state.hyperparams)
        hp["learning_rate"] = jnp.asarray(lrs[group], hp["learning_rate"].dtype)
        if "momentum" in hp:
            hp["momentum"] = jnp.asarray(momentum, hp["momentum"].dtype)
        inner[group] = masked._replace(inner_state=masked.inner_state._replace(hyperparams=hp))
    return opt_state._replace(inner_states=inner)


@flax.struct.dataclass
class Schedule:
    """Everything the in-step schedule needs. The numbers are pytree leaves (runtime values carried in the
    train state), so runs that differ only in epochs, lr or dataset size share one compiled step; the
    three flags that change the computation are static."""

    lr0: float
    lrf: float
    epochs: int
    nb: int  # batches per epoch
    nw: int  # warmup iterations (-1: none)
    momentum: float
    warmup_momentum: float
    warmup_bias_lr: float
    accumulate: int = 1  # max(round(nbs / batch), 1)
    nbs_over_batch: float = 1.0
    cos_lr: bool = flax.struct.field(pytree_node=False, default=False)
    compat: str = flax.struct.field(pytree_node=False, default="v8")

    def as_arrays(self) -> "Schedule":
        return jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), self)

    def lf(self, epoch):
        e = jnp.asarray(epoch, jnp.float32)
        if self.cos_lr:
            return ((1 - jnp.cos(e * math.pi / self.epochs)) / 2) * (self.lrf - 1) + 1
        if self.compat == "current":
            return jnp.maximum(1 - e / self.epochs, 0.0) * (1.0 - self.lrf) + self.lrf
        return (1 - e / self.epochs) * (1.0 - self.lrf) + self.lrf

    def at(self, ni) -> tuple[dict[str, jax.Array], jax.Array, jax.Array]:
        """(lr per group, momentum, accumulate) in effect at global iteration ``ni``. The lrs hold 'bias',
        'weight', 'bn' and MuSGD's '<group>_boost' (``MUSGD_BOOST`` times the target, same warmup start); the
        momentum reaches only optimizers whose groups have one (``set_hyperparams``)."""
        ni = jnp.asarray(ni, jnp.float32)
        epoch = jnp.floor(ni / self.nb)
        target = self.lr0 * self.lf(epoch)
        frac = jnp.clip(ni / jnp.maximum(self.nw, 1), 0.0, 1.0)
        in_warmup = (ni <= self.nw) & (self.nw > 0)
        lrs = {}
        for group in ("bias", "weight", "bn"):
            start = self.warmup_bias_lr if group == "bias" else 0.0
            for suffix, scale in (("", 1.0), ("_boost", MUSGD_BOOST)):
                lrs[group + suffix] = jnp.where(in_warmup, start + frac * (scale * target - start), scale * target)
        mom = jnp.where(in_warmup, self.warmup_momentum + frac * (self.momentum - self.warmup_momentum),
                        self.momentum)
        acc_end = self.nbs_over_batch if self.compat == "v8" else self.accumulate
        acc_warm = jnp.maximum(1.0, jnp.round(1.0 + frac * (acc_end - 1.0)))
        accumulate = jnp.where(in_warmup, acc_warm, self.accumulate).astype(jnp.int32)
        return lrs, mom, accumulate


def accumulate_steps(nbs: int, batch: int) -> int:
    """Batches whose gradients are summed into one optimizer step: max(round(nbs / batch), 1)."""
    return max(round(nbs / batch), 1)


def scaled_weight_decay(weight_decay: float, batch: int, nbs: int) -> float:
    """weight_decay * batch * accumulate / nbs (e.g. batch 16 -> 5e-4, 24 -> 5.625e-4, 128 -> 1e-3)."""
    return weight_decay * batch * accumulate_steps(nbs, batch) / nbs


def warmup_iterations(warmup_epochs: float, nb: int, epochs: int, compat: str = "v8") -> int:
    if compat == "v8":
        return max(round(warmup_epochs * nb), 100) if warmup_epochs > 0 else -1
    return round(min(warmup_epochs, max(epochs - 1, 0)) * nb)


def ema_decay(updates, decay: float = 0.9999, tau: float = 2000.0):
    """d = decay * (1 - exp(-updates / tau)); expm1 keeps float32 exact where 1 - exp(x) would cancel."""
    return decay * -jnp.expm1(-jnp.asarray(updates, jnp.float32) / tau)
