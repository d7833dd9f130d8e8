"""Classification transforms (Ultralytics 8.2 ``classify_transforms`` / ``classify_augmentations``), pure functions.

Images are uint8 HWC **RGB** in and out; normalisation is the device's ``/ 255`` (Ultralytics' classification mean is
0 and std 1). Every random choice is drawn from an explicit ``np.random.Generator`` (the loaders seed it with
``default_rng([seed, epoch, index])``), so a sample is a pure function of its seed and a resumed run sees the same
samples. Random streams differ from torch's; the distributions and the deterministic pixel operations match
torchvision on PIL images (which Ultralytics feeds it): resizing uses PIL's bilinear filter, which averages over
the source footprint when shrinking (OpenCV's ``INTER_LINEAR`` does not), and the auto-augment ops use PIL too.

Validation (``classify_val``): resize the short side to ``floor(imgsz / crop_fraction)`` (long side
``int(short * long / short_in)``), then centre-crop ``imgsz`` (offsets ``round((h - imgsz) / 2)``).

Training (``classify_train``), in order: RandomResizedCrop to ``imgsz`` (area fraction in ``scale``, aspect ratio
log-uniform in ``ratio``, 10 tries then a centre crop of the clamped ratio), horizontal flip (p=``fliplr``), vertical
flip (p=``flipud``), then either the ``auto_augment`` policy or — only when it is off (or ``force_color_jitter``) —
colour jitter (brightness and contrast ``hsv_v``, saturation ``hsv_s``, hue ``hsv_h``, applied in a random order),
then random erasing (p=``erasing``; area 2–33 %, ratio 0.3–3.3, filled with 0). ``train_kwargs(hyp)`` maps a
training config to these keywords: Ultralytics' dataset passes ``scale=(1 - hyp.scale, 1)``, so the default
``scale=0.5`` crops 50–100 % of the area, and ``auto_augment="randaugment"`` turns colour jitter off.
``auto_augment``: ``randaugment`` (2 ops of the 14, magnitude 9 of 31 bins, signed ops negated with p=0.5),
``autoaugment`` (the ImageNet policy), ``augmix`` (torchvision's defaults: the original blended with 3 chains of 1–3
ops at severity 3, Beta(1, 1) and Dirichlet(1) weights). torchvision runs AugMix's ops on tensors (it converts the
PIL image); yolojax runs the same ops through PIL, so AugMix pixels may differ from torchvision's by interpolation and
rounding; the draws' distributions and the mix are the same.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

RRC_SCALE = (0.08, 1.0)
RRC_RATIO = (3 / 4, 4 / 3)
ERASE_SCALE = (0.02, 0.33)
ERASE_RATIO = (0.3, 3.3)
AUTO_AUGMENT = ("randaugment", "autoaugment", "augmix")
_BILINEAR = Image.Resampling.BILINEAR


def resize(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(h, w, 3) uint8 -> ``hw`` uint8 by PIL bilinear (antialiased when shrinking)."""
    if img.shape[:2] == tuple(hw):
        return img
    return np.asarray(Image.fromarray(img).resize((hw[1], hw[0]), _BILINEAR))


def short_side_size(hw: tuple[int, int], size: int) -> tuple[int, int]:
    """(h, w) with the short side ``size`` and the long side ``int(size * long / short)`` (torchvision's rule)."""
    h, w = hw
    if h <= w:
        return size, int(size * w / h)
    return int(size * h / w), size


def center_crop(img: np.ndarray, size: int) -> np.ndarray:
    """The centred ``size``×``size`` window (offsets rounded half to even); the image must be at least that large."""
    h, w = img.shape[:2]
    if h < size or w < size:
        raise ValueError(f"center_crop: image {h}x{w} is smaller than the crop {size}")
    top, left = int(round((h - size) / 2)), int(round((w - size) / 2))
    return img[top:top + size, left:left + size]


def classify_val(img: np.ndarray, imgsz: int, crop_fraction: float = 1.0) -> np.ndarray:
    """Validation transform: (h, w, 3) uint8 -> (imgsz, imgsz, 3) uint8 (see module docstring)."""
    scaled = math.floor(imgsz / crop_fraction)
    return center_crop(resize(img, short_side_size(img.shape[:2], scaled)), imgsz)


def random_resized_crop_box(rng: np.random.Generator, hw: tuple[int, int], scale=RRC_SCALE,
                            ratio=RRC_RATIO) -> tuple[int, int, int, int]:
    """A crop ``(top, left, height, width)`` of an (h, w) image: area fraction ~ U(scale), aspect (w/h) log-uniform
    in ``ratio``; 10 tries, then the whole image cropped centrally to the nearest ratio in range."""
    h, w = hw
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
    in_ratio = w / h
    if in_ratio < min(ratio):
        cw, ch = w, int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        cw, ch = int(round(h * max(ratio))), h
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def _affine(img: Image.Image, inverse: tuple[float, ...]) -> Image.Image:
    """PIL affine with ``inverse`` = (a, b, c, d, e, f): output (x, y) samples input (ax + by + c, dx + ey + f)."""
    return img.transform(img.size, Image.Transform.AFFINE, inverse, _BILINEAR, fillcolor=(0, 0, 0))


def _shear_inverse(sx: float, sy: float) -> tuple[float, ...]:
    """Inverse affine of a shear by angles ``sx``, ``sy`` (radians) about the origin, in torchvision's arithmetic
    (the same float rounding, so sampled pixels agree exactly)."""
    a = math.cos(-sy) / math.cos(sy)
    b = -math.cos(-sy) * math.tan(sx) / math.cos(sy)
    c = math.sin(-sy) / math.cos(sy)
    d = -math.sin(-sy) * math.tan(sx) / math.cos(sy) + 1.0
    return d, -b, 0.0, -c, a, 0.0


def _adjust_hue(img: Image.Image, factor: float) -> Image.Image:
    """Shift the PIL HSV hue channel by ``factor`` turns (``factor`` in [-0.5, 0.5]), wrapping around."""
    h, s, v = img.convert("HSV").split()
    hue = ((np.asarray(h, np.int32) + int(factor * 255)) % 256).astype(np.uint8)  # shift truncated toward 0
    return Image.merge("HSV", (Image.fromarray(hue, "L"), s, v)).convert("RGB")


def linspace32(start: float, end: float, n: int) -> np.ndarray:
    """float32 ``n`` points from ``start`` to ``end`` as torch's CPU ``linspace`` rounds them (float32 step; the
    first half counted up from ``start``, the rest down from ``end``, each a fused multiply-add), so that
    magnitudes, and the pixels they produce, agree exactly."""
    lo, hi = np.float32(start), np.float32(end)
    step = np.float64(np.float32((hi - lo) / np.float32(n - 1)))
    i = np.arange(n, dtype=np.float64)
    return np.where(i < n // 2, np.float64(lo) + step * i, np.float64(hi) - step * (n - 1 - i)).astype(np.float32)


def op_space(hw: tuple[int, int], bins: int, *, max_translate: tuple[float, float] | None = None,
             max_bits: int = 8) -> dict[str, tuple[np.ndarray, bool]]:
    """Augmentation ops for an (h, w) image: name -> (float32 magnitudes over ``bins``, signed). Ops without a
    magnitude have a single 0. ``max_translate``: the largest (vertical, horizontal) shift in pixels (default
    150/331 of the side, RandAugment's and AutoAugment's range); posterize keeps ``max_bits`` down to
    ``max_bits - 4`` bits."""
    h, w = hw
    ty, tx = max_translate if max_translate is not None else (150.0 / 331.0 * h, 150.0 / 331.0 * w)
    lin = lambda hi: linspace32(0.0, hi, bins)  # noqa: E731
    zero = np.zeros(1, np.float32)
    return {"identity": (zero, False), "shear_x": (lin(0.3), True), "shear_y": (lin(0.3), True),
            "translate_x": (lin(tx), True), "translate_y": (lin(ty), True),
            "rotate": (lin(30.0), True), "brightness": (lin(0.9), True), "color": (lin(0.9), True),
            "contrast": (lin(0.9), True), "sharpness": (lin(0.9), True),
            "posterize": (max_bits - np.round(np.arange(bins) / ((bins - 1) / 4)).astype(np.float32), False),
            "solarize": (linspace32(255.0, 0.0, bins), False), "autocontrast": (zero, False),
            "equalize": (zero, False), "invert": (zero, False)}


RAND_AUGMENT_OPS = ("identity", "shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness", "color",
                    "contrast", "sharpness", "posterize", "solarize", "autocontrast", "equalize")
# AugMix with all ops: no identity or invert; the colour, contrast, brightness and sharpness ops included.
AUGMIX_OPS = ("shear_x", "shear_y", "translate_x", "translate_y", "rotate", "posterize", "solarize", "autocontrast",
              "equalize", "brightness", "color", "contrast", "sharpness")
AUGMIX_SEVERITY_MAX = 10  # AugMix's magnitude bins; ``severity`` draws from the lowest ``severity`` of them
# AutoAugment's ImageNet policy: 25 sub-policies of two (op, probability, magnitude bin of 10 or None).
AUTO_AUGMENT_IMAGENET = (
    (("posterize", 0.4, 8), ("rotate", 0.6, 9)), (("solarize", 0.6, 5), ("autocontrast", 0.6, None)),
    (("equalize", 0.8, None), ("equalize", 0.6, None)), (("posterize", 0.6, 7), ("posterize", 0.6, 6)),
    (("equalize", 0.4, None), ("solarize", 0.2, 4)), (("equalize", 0.4, None), ("rotate", 0.8, 8)),
    (("solarize", 0.6, 3), ("equalize", 0.6, None)), (("posterize", 0.8, 5), ("equalize", 1.0, None)),
    (("rotate", 0.2, 3), ("solarize", 0.6, 8)), (("equalize", 0.6, None), ("posterize", 0.4, 6)),
    (("rotate", 0.8, 8), ("color", 0.4, 0)), (("rotate", 0.4, 9), ("equalize", 0.6, None)),
    (("equalize", 0.0, None), ("equalize", 0.8, None)), (("invert", 0.6, None), ("equalize", 1.0, None)),
    (("color", 0.6, 4), ("contrast", 1.0, 8)), (("rotate", 0.8, 8), ("color", 1.0, 2)),
    (("color", 0.8, 8), ("solarize", 0.8, 7)), (("sharpness", 0.4, 7), ("invert", 0.6, None)),
    (("shear_x", 0.6, 5), ("equalize", 1.0, None)), (("color", 0.4, 0), ("equalize", 0.6, None)),
    (("equalize", 0.4, None), ("solarize", 0.2, 4)), (("solarize", 0.6, 5), ("autocontrast", 0.6, None)),
    (("invert", 0.6, None), ("equalize", 1.0, None)), (("color", 0.6, 4), ("contrast", 1.0, 8)),
    (("equalize", 0.8, None), ("equalize", 0.6, None)))


def apply_op(img: Image.Image, name: str, m: float) -> Image.Image:
    """One RandAugment op at signed magnitude ``m`` (shears as tangents, translations in pixels, rotation in
    degrees counter-clockwise about the centre, enhance ops as factor ``1 + m``); black fill outside the image."""
    if name in ("shear_x", "shear_y"):
        angle = math.radians(math.degrees(math.atan(m)))
        return _affine(img, _shear_inverse(angle, 0.0) if name == "shear_x" else _shear_inverse(0.0, angle))
    if name == "translate_x":
        return _affine(img, (1.0, 0.0, -float(int(m)), 0.0, 1.0, 0.0))
    if name == "translate_y":
        return _affine(img, (1.0, 0.0, 0.0, 0.0, 1.0, -float(int(m))))
    if name == "rotate":
        return img.rotate(m, _BILINEAR, expand=False, fillcolor=(0, 0, 0))
    enhance = {"brightness": ImageEnhance.Brightness, "color": ImageEnhance.Color,
               "contrast": ImageEnhance.Contrast, "sharpness": ImageEnhance.Sharpness}
    if name in enhance:
        return enhance[name](img).enhance(1.0 + m)
    if name == "posterize":  # keeping 0 bits makes the image black (torchvision's tensor op; PIL refuses 0)
        return ImageOps.posterize(img, int(m)) if int(m) else Image.new(img.mode, img.size)
    if name == "solarize":
        return ImageOps.solarize(img, m)
    if name == "autocontrast":
        return ImageOps.autocontrast(img)
    if name == "equalize":
        return ImageOps.equalize(img)
    if name == "invert":
        return ImageOps.invert(img)
    if name == "identity":
        return img
    raise ValueError(f"unknown RandAugment op '{name}'")


def _signed_magnitude(rng: np.random.Generator, space: dict[str, tuple[np.ndarray, bool]], name: str,
                      bin_: int) -> float:
    """``name``'s magnitude at ``bin_`` (0 for an op without one), negated with p=0.5 when the op is signed."""
    mags, signed = space[name]
    m = float(mags[bin_]) if len(mags) > 1 else 0.0
    return -m if signed and rng.integers(0, 2) else m


def rand_augment(img: np.ndarray, rng: np.random.Generator, num_ops: int = 2, magnitude: int = 9,
                 bins: int = 31) -> np.ndarray:
    """RandAugment: ``num_ops`` ops drawn uniformly (with replacement) from the 14, each at bin ``magnitude``."""
    space = op_space(img.shape[:2], bins)
    pil = Image.fromarray(img)
    for _ in range(num_ops):
        name = RAND_AUGMENT_OPS[int(rng.integers(0, len(RAND_AUGMENT_OPS)))]
        pil = apply_op(pil, name, _signed_magnitude(rng, space, name, magnitude))
    return np.asarray(pil)


def auto_augment_imagenet(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """AutoAugment (ImageNet policy): one sub-policy drawn uniformly; each of its two ops applied with its
    probability at its bin of 10 magnitudes, signed ops negated with p=0.5."""
    space = op_space(img.shape[:2], 10)
    policy = AUTO_AUGMENT_IMAGENET[int(rng.integers(0, len(AUTO_AUGMENT_IMAGENET)))]
    probs, negate = rng.random(2), rng.integers(0, 2, 2)
    pil = Image.fromarray(img)
    for (name, p, bin_), u, neg in zip(policy, probs, negate):
        if u <= p:
            mags, signed = space[name]
            m = float(mags[bin_]) if bin_ is not None else 0.0
            pil = apply_op(pil, name, -m if signed and neg else m)
    return np.asarray(pil)


def augmix_draw(img: np.ndarray, rng: np.random.Generator, *, severity: int = 3, mixture_width: int = 3,
                chain_depth: int = -1, alpha: float = 1.0) -> tuple[float, np.ndarray, list[np.ndarray]]:
    """AugMix's random part for an (h, w, 3) uint8 image: ``(skip, weights, chains)``. ``skip`` ~ Beta(alpha, alpha)
    is the original's share; ``weights`` (mixture_width,) ~ Dirichlet(alpha) share the rest among the chains; each
    of the ``mixture_width`` chains (h, w, 3) uint8 applies ``chain_depth`` ops (a uniform 1..3 per chain when
    ``chain_depth <= 0``) drawn uniformly from ``AUGMIX_OPS`` to the original, each at a magnitude bin drawn
    uniformly from the lowest ``severity`` of 10 (translations up to a third of the side, posterize 4 bits down
    to 0), signed ops negated with p=0.5."""
    if not 1 <= severity <= AUGMIX_SEVERITY_MAX:
        raise ValueError(f"AugMix severity is {severity}; valid: an integer in [1, {AUGMIX_SEVERITY_MAX}].")
    h, w = img.shape[:2]
    space = op_space((h, w), AUGMIX_SEVERITY_MAX, max_translate=(h / 3.0, w / 3.0), max_bits=4)
    skip = float(rng.beta(alpha, alpha))
    weights = rng.dirichlet([alpha] * mixture_width)
    original, chains = Image.fromarray(img), []
    for _ in range(mixture_width):
        aug = original
        for _ in range(chain_depth if chain_depth > 0 else int(rng.integers(1, 4))):
            name = AUGMIX_OPS[int(rng.integers(0, len(AUGMIX_OPS)))]
            aug = apply_op(aug, name, _signed_magnitude(rng, space, name, int(rng.integers(0, severity))))
        chains.append(np.asarray(aug))
    return skip, weights, chains


def augmix_blend(img: np.ndarray, chains: list[np.ndarray], skip: float, weights: np.ndarray) -> np.ndarray:
    """``skip · img + (1 - skip) · Σ_i weights[i] · chains[i]`` in float32, truncated to uint8 as torchvision's
    AugMix converts its mix. ``img`` and each chain (h, w, 3) uint8; ``skip`` in [0, 1]; ``weights``
    (len(chains),) summing to 1."""
    shares = np.float32(1.0 - skip) * np.asarray(weights, np.float32)
    mix = np.float32(skip) * img.astype(np.float32)
    for share, chain in zip(shares, chains):
        mix += share * chain.astype(np.float32)
    return mix.astype(np.uint8)


def aug_mix(img: np.ndarray, rng: np.random.Generator, **kw) -> np.ndarray:
    """AugMix (Hendrycks et al. 2020) with torchvision's defaults: (h, w, 3) uint8 -> (h, w, 3) uint8, the
    original blended with ``mixture_width`` augmentation chains (``augmix_draw``'s keywords, ``augmix_blend``)."""
    skip, weights, chains = augmix_draw(img, rng, **kw)
    return augmix_blend(img, chains, skip, weights)


def color_jitter(img: np.ndarray, rng: np.random.Generator, brightness=0.4, contrast=0.4, saturation=0.7,
                 hue=0.015) -> np.ndarray:
    """Brightness, contrast, saturation factors ~ U(max(0, 1 - x), 1 + x) and hue shift ~ U(-hue, hue) turns,
    applied in a random order (a factor of 0 width is skipped)."""
    order = rng.permutation(4)
    b, c, s = (rng.uniform(max(0.0, 1 - x), 1 + x) for x in (brightness, contrast, saturation))
    hf = rng.uniform(-hue, hue)
    pil = Image.fromarray(img)
    for k in order:
        if k == 0 and brightness:
            pil = ImageEnhance.Brightness(pil).enhance(b)
        elif k == 1 and contrast:
            pil = ImageEnhance.Contrast(pil).enhance(c)
        elif k == 2 and saturation:
            pil = ImageEnhance.Color(pil).enhance(s)
        elif k == 3 and hue:
            pil = _adjust_hue(pil, hf)
    return np.asarray(pil)


def random_erasing_box(rng: np.random.Generator, hw: tuple[int, int], p: float = 0.5, scale=ERASE_SCALE,
                       ratio=ERASE_RATIO) -> tuple[int, int, int, int] | None:
    """With probability ``p``, a rectangle ``(top, left, height, width)`` of area fraction ~ U(scale) and aspect
    (h/w) log-uniform in ``ratio`` strictly inside the image (10 tries); else None."""
    if not rng.random() < p:
        return None
    h, w = hw
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = h * w * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        eh, ew = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if eh < h and ew < w:
            return int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1)), eh, ew
    return None


def _check_auto_augment(auto_augment: Any) -> str | None:
    if auto_augment in (None, "", False, "none"):
        return None
    if auto_augment in AUTO_AUGMENT:
        return auto_augment
    raise ValueError(f"auto_augment is {auto_augment!r}; valid: {', '.join(AUTO_AUGMENT)} or none.")


def classify_train(img: np.ndarray, rng: np.random.Generator, *, imgsz: int, scale=RRC_SCALE, ratio=RRC_RATIO,
                   fliplr: float = 0.5, flipud: float = 0.0, auto_augment: str | None = "randaugment",
                   hsv_h: float = 0.015, hsv_s: float = 0.4, hsv_v: float = 0.4, force_color_jitter: bool = False,
                   erasing: float = 0.0) -> np.ndarray:
    """Training transform: (h, w, 3) uint8 RGB -> (imgsz, imgsz, 3) uint8 RGB (see module docstring)."""
    policy = _check_auto_augment(auto_augment)
    top, left, ch, cw = random_resized_crop_box(rng, img.shape[:2], scale, ratio)
    out = resize(np.ascontiguousarray(img[top:top + ch, left:left + cw]), (imgsz, imgsz))
    if rng.random() < fliplr:
        out = out[:, ::-1]
    if rng.random() < flipud:
        out = out[::-1]
    out = np.ascontiguousarray(out)
    if policy == "randaugment":
        out = rand_augment(out, rng)
    elif policy == "autoaugment":
        out = auto_augment_imagenet(out, rng)
    elif policy == "augmix":
        out = aug_mix(out, rng)
    if policy is None or force_color_jitter:
        out = color_jitter(out, rng, hsv_v, hsv_v, hsv_s, hsv_h)
    box = random_erasing_box(rng, out.shape[:2], erasing)
    if box is not None:
        out = out.copy()
        out[box[0]:box[0] + box[2], box[1]:box[1] + box[3]] = 0
    return out


def train_kwargs(hyp: Mapping[str, Any]) -> dict[str, Any]:
    """``classify_train`` keywords from a training config (Ultralytics keys; ``scale`` becomes ``(1 - scale, 1)``)."""
    s = float(hyp.get("scale", 0.5))
    if not 0.0 <= s < 1.0:
        raise ValueError(f"scale is {s}; for classification it must be in [0, 1) (crops keep 1 - scale to 100 % "
                         "of the image area).")
    auto_augment = hyp.get("auto_augment", "randaugment")
    _check_auto_augment(auto_augment)  # here, before any worker process draws a sample
    return {"imgsz": int(hyp.get("imgsz", 224)), "scale": (1.0 - s, 1.0), "fliplr": float(hyp.get("fliplr", 0.5)),
            "flipud": float(hyp.get("flipud", 0.0)), "auto_augment": auto_augment,
            "hsv_h": float(hyp.get("hsv_h", 0.015)), "hsv_s": float(hyp.get("hsv_s", 0.7)),
            "hsv_v": float(hyp.get("hsv_v", 0.4)), "erasing": float(hyp.get("erasing", 0.4))}
