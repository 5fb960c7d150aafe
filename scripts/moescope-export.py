#!/usr/bin/env python3
# moescope - scripts/moescope-export.py
# Records a PyTorch model's FFN weights and activations in moescope's HDF5 layout
# (SPEC section 1) while text runs through the model. Forward pre-hooks on each FFN's
# first and second projection capture x (the FFN input) and h (the input of the down
# projection, exactly what the model computed); rows are appended per batch to resizable
# chunked datasets, so a long run never holds all activations in memory. Every batch is
# checked: h recomputed from x and the weights with the declared activation must equal
# the captured h. Usable as a command (below) or as a library: load this file with
# importlib and call export(model, batches, out_path, ...).
# SPDX-License-Identifier: MIT
"""Export a PyTorch model's FFN weights and activations for moescope.

moescope-export runs text through a PyTorch model and writes, for every FFN layer that
matches a pattern, the weights (w_in, b_in, w_gate, w_out, b_out), the FFN inputs x and
the hidden activations h in the HDF5 layout moescope reads (moescope(5)). Rows are
appended batch by batch (float32 or float16, optionally gzip-compressed). Padding is left
out when a batch carries an attention mask; /tokens and /seq_offsets record the token ids
and where each sequence starts.

The model and the text come from a Python file you write: --model-module FILE.py:FUNC
names a function that returns (model, batches), (model, batches, text) or a dict with
keys model, batches and optionally model_name, text. A batch is one of
  - a LongTensor of token ids [batch, seq]          -> model(ids)
  - a dict / BatchEncoding with input_ids and optionally attention_mask -> model(**batch)
  - a tuple (ids, attention_mask, ...)              -> model(*batch)
    (the second element is the mask when it has ids' shape and holds only 0 and 1)
The exporter puts the model in eval mode (no dropout), runs it under torch.no_grad()
and moves each batch to the device of the model's first parameter. FFN inputs may be
[batch, seq, d], [seq, batch, d] (taken as such when seq != batch, or with --seq-first)
or [batch * seq, d]. When a layer does not see one row per token (e.g. a decoder fed
other tokens), its rows are still recorded, but /tokens and /seq_offsets are left out.

--ffn selects the FFN modules by their path in model.named_modules(): a glob where * and
? match within one dotted component and ** across dots ('model.layers.*.mlp',
'**.DenseReluDense'), or a regular expression after 're:'. Layers are numbered 0, 1, ...
in the order the modules appear. Without --ffn, every module whose children look like a
known family's projections is taken.

FFN families (found automatically, relative to each matched module):
  gated  gate_proj/up_proj/down_proj (LLaMA, Mistral), wi_0/wi_1/wo (T5 v1.1),
         w1/w3/w2 (Mixtral experts)       h = act(x W_gate^T) * (x W_in^T + b_in)
  plain  wi/wo (T5), intermediate.dense/output.dense (BERT), fc1/fc2 (OPT, ViT),
         c_fc/c_proj (GPT-2), fc_in/fc_out (GPT-J), dense_h_to_4h/dense_4h_to_h
         (GPT-NeoX), lin1/lin2 (DistilBERT), linear1/linear2 (nn.TransformerEncoderLayer)
                                           h = act(x W_in^T + b_in)
For another architecture, name the projections with --in, --out (and --gate) and the
activation with --act. The activation is otherwise read from the module next to the
first projection (nn.ReLU, nn.GELU, nn.SiLU, HuggingFace's activation classes, or
torch.nn.functional.relu/gelu/silu stored as an attribute); when there is none, the
one of relu, gelu, gelu_tanh, silu, identity that reproduces h on the first batch.
x is the input of the first projection, which is the FFN module's input for T5 and
LLaMA and the input of BertIntermediate for BERT.

The check: for every layer and batch, h is recomputed from the captured x and the
weights and compared with the h the model produced (relative max error = max |diff| /
max |h|, tolerance 1e-4 for float32/float64 models, 2e-2 for float16/bfloat16). A
mismatch (e.g. a wrong --act) stops the export with status 2 and names the layer; no
output file is left behind.

Exit status: 0 success, 2 bad input or a failed check.

Examples:
  # a local HuggingFace T5 encoder; my_t5.py defines factory() returning (model, batches)
  moescope-export --model-module my_t5.py:factory \\
      --ffn 'encoder.block.*.layer.1.DenseReluDense' -o t5.h5
  # LLaMA-style gated MLPs, float16 and gzip level 4, without h (moescope recomputes it)
  moescope-export --model-module my_llama.py:factory --ffn 'model.layers.*.mlp' \\
      --float16 --gzip 4 --no-h -o llama.h5
  # a custom block: projections named proj_a (gate), proj_b (in), proj_c (out)
  moescope-export --model-module mine.py:build --ffn 're:blocks\\.[0-9]+\\.ffn' \\
      --gate proj_a --in proj_b --out proj_c --act gelu_tanh -o mine.h5
  moescope --batch --experts 8,16 --k 1,2 -o results.csv t5.h5

A factory for a local HuggingFace checkpoint (no network needed):
  from transformers import AutoTokenizer, T5EncoderModel
  def factory(path="/models/t5-small", text="corpus.txt"):
      tok = AutoTokenizer.from_pretrained(path)
      model = T5EncoderModel.from_pretrained(path)
      lines = [l for l in open(text) if l.strip()]
      return model, [tok(lines[i:i + 16], return_tensors="pt", padding=True,
                         truncation=True, max_length=256)
                     for i in range(0, len(lines), 16)]
Values given with --arg KEY=VALUE are passed to the factory as keyword arguments
(strings); `--arg path=/models/t5-base` selects another checkpoint.
"""

import argparse
import collections.abc
import importlib.util
import math
import os
import re
import sys

ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "silu", "identity")

# (label, gate, in, out): relative module paths of the projections, gated families first.
FAMILIES = (
    ("llama", "gate_proj", "up_proj", "down_proj"),
    ("t5-gated", "wi_0", "wi_1", "wo"),
    ("mixtral", "w1", "w3", "w2"),
    ("t5", None, "wi", "wo"),
    ("bert", None, "intermediate.dense", "output.dense"),
    ("fc", None, "fc1", "fc2"),
    ("gpt2", None, "c_fc", "c_proj"),
    ("gptj", None, "fc_in", "fc_out"),
    ("neox", None, "dense_h_to_4h", "dense_4h_to_h"),
    ("distilbert", None, "lin1", "lin2"),
    ("torch", None, "linear1", "linear2"),
)

# HuggingFace activation classes (transformers.activations), matched by class name so
# that transformers need not be installed.
HF_ACTIVATION_CLASSES = {
    "GELUActivation": "gelu", "NewGELUActivation": "gelu_tanh",
    "FastGELUActivation": "gelu_tanh", "PytorchGELUTanh": "gelu_tanh",
    "GELUTanh": "gelu_tanh", "SiLUActivation": "silu", "ReLUActivation": "relu",
}


class ExportError(Exception):
    """Bad input or a failed check; the message is one sentence for the user."""


def _torch():
    import torch  # imported lazily: --help must not wait for torch
    return torch


# ---- activations ------------------------------------------------------------------------

def apply_activation(name, t):
    """The activation `name` (one of ACTIVATIONS) applied to tensor t."""
    F = _torch().nn.functional
    if name == "relu":
        return F.relu(t)
    if name == "gelu":
        return F.gelu(t)
    if name == "gelu_tanh":
        return F.gelu(t, approximate="tanh")
    if name == "silu":
        return F.silu(t)
    if name == "identity":
        return t
    raise ExportError("unknown activation '%s' (expected one of %s)"
                      % (name, ", ".join(ACTIVATIONS)))


def activation_of(obj):
    """The SPEC activation name of a module or function, or None when it is not one."""
    torch = _torch()
    nn, F = torch.nn, torch.nn.functional
    if isinstance(obj, nn.ReLU):
        return "relu"
    if isinstance(obj, nn.GELU):
        return "gelu_tanh" if getattr(obj, "approximate", "none") == "tanh" else "gelu"
    if isinstance(obj, nn.SiLU):
        return "silu"
    if isinstance(obj, nn.Module):
        return HF_ACTIVATION_CLASSES.get(type(obj).__name__)
    funcs = {F.relu: "relu", torch.relu: "relu", F.gelu: "gelu", F.silu: "silu"}
    try:
        return funcs.get(obj)
    except TypeError:  # unhashable attribute
        return None


def activations_in(module):
    """Activation names found among a module's children and callable attributes."""
    found = []
    for child in module.children():
        a = activation_of(child)
        if a:
            found.append(a)
    for value in vars(module).values():
        if callable(value) and not isinstance(value, type):
            a = activation_of(value)
            if a:
                found.append(a)
    return set(found)


# ---- finding the FFN layers -------------------------------------------------------------

def _submodule(root, path):
    mod = root
    for part in path.split("."):
        if not hasattr(mod, "_modules") or part not in mod._modules or mod._modules[part] is None:
            return None
        mod = mod._modules[part]
    return mod


def _parent_path(path):
    return path.rsplit(".", 1)[0] if "." in path else ""


def _is_projection(mod):
    w = getattr(mod, "weight", None)
    return w is not None and hasattr(w, "dim") and w.dim() == 2


def _glob_regex(pattern):
    """A module-path glob as a regular expression: * and ? stay within one dotted
    component, ** crosses dots, [...] is a character class."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^.]*")
        elif c == "?":
            out.append("[^.]")
        elif c == "[" and "]" in pattern[i + 1:]:
            j = pattern.index("]", i + 2 if pattern[i + 1:i + 2] == "]" else i + 1)
            body = pattern[i + 1:j].replace("\\", "\\\\")
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = j + 1
            continue
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _pattern_matches(pattern, name):
    if pattern.startswith("re:"):
        return re.fullmatch(pattern[3:], name) is not None
    return re.fullmatch(_glob_regex(pattern), name) is not None


def _has_projections(module, fam):
    return all(_is_projection(_submodule(module, p) or object()) for p in fam if p)


def _family_of(module, family, names):
    """(gate, in, out) relative paths for one module, or None when nothing fits."""
    if names["in"] or names["out"] or names["gate"]:
        fam = (names["gate"], names["in"], names["out"])
        return fam if _has_projections(module, fam) else None
    for _label, gate, inp, out in FAMILIES:
        if family == "plain" and gate:
            continue
        if family == "gated" and not gate:
            continue
        if _has_projections(module, (gate, inp, out)):
            return gate, inp, out
    return None


def find_layers(model, patterns, family="auto", names=None):
    """[(module path, module, (gate, in, out))] in the order the modules appear."""
    names = names or {"in": None, "out": None, "gate": None}
    if family not in ("auto", "plain", "gated"):
        raise ExportError("unknown family '%s' (expected auto, plain or gated)" % family)
    if (names["in"] or names["out"] or names["gate"]) and not (names["in"] and names["out"]):
        raise ExportError("--in and --out must be given together (and --gate for a gated FFN)")
    if family == "gated" and names["in"] and not names["gate"]:
        raise ExportError("--family gated needs --gate when --in and --out are given")
    auto = not patterns or patterns == ["auto"]
    found = []
    for path, module in model.named_modules():
        if not auto and not any(_pattern_matches(p, path) for p in patterns):
            continue
        if auto and any(path.startswith(prev + ".") for prev, _m, _f in found):
            continue  # a projection's parent inside an FFN already found
        fam = _family_of(module, family, names)
        if fam is None and auto:
            continue
        if fam is None and (names["in"] or names["out"]):
            missing = [p for p in (names["gate"], names["in"], names["out"])
                       if p and not _is_projection(_submodule(module, p) or object())]
            raise ExportError("module '%s' matches the FFN pattern but has no projection '%s' "
                              "with a 2-D weight" % (path, missing[0]))
        if fam is None:
            raise ExportError("module '%s' matches the FFN pattern but has no %s projections "
                              "(pass --in/--out/--gate, or a narrower --ffn)"
                              % (path, {"auto": "known", "plain": "plain",
                                        "gated": "gated"}[family]))
        found.append((path, module, fam))
    if not found:
        what = "no module matches --ffn %s" % " ".join(patterns) if not auto else \
            "no FFN module of a known family found (pass --ffn, --in, --out)"
        raise ExportError(what)
    return found


# ---- one layer --------------------------------------------------------------------------

class Layer:
    """One FFN layer: its projections, their weights (detached, on the model's device) and
    its hooks. The first projection's hook keeps x; the down projection's hook hands x and
    h to the batch being run at once, so that only one layer's activations are held."""

    def __init__(self, index, path, module, fam, act):
        gate, inp, out = fam
        self.index, self.path = index, path
        self.gated = gate is not None
        self.rel = {"gate": gate, "in": inp, "out": out}
        self.mods = {k: _submodule(module, v) for k, v in self.rel.items() if v}
        self.act, self.act_source = act, ("given" if act else None)
        self.w, self.b = {}, {}
        for key, mod in self.mods.items():
            self.w[key], self.b[key] = self._params(key, mod)
        self._check_shapes()
        if self.act is None:
            self._detect_activation(module, inp)
        self.pending_x, self.runs, self.batch = None, 0, None
        self.worst = 0.0
        self.n_tokens = 0
        self.handles = []

    def _params(self, key, mod):
        w = mod.weight.detach()
        # HuggingFace's Conv1D (GPT-2) stores [in, out] and computes x W + b.
        if type(mod).__name__ == "Conv1D":
            w = w.t()
        b = getattr(mod, "bias", None)
        b = b.detach() if b is not None else None
        if b is not None and key == "gate":
            raise ExportError("layer %d (%s): the gate projection '%s' has a bias, which the "
                              "moescope format cannot represent"
                              % (self.index, self.path, self.rel["gate"]))
        return w, b

    def _check_shapes(self):
        d_ff, d_model = self.w["in"].shape
        want = {"in": (d_ff, d_model), "gate": (d_ff, d_model), "out": (d_model, d_ff)}
        for key, w in self.w.items():
            if tuple(w.shape) != want[key]:
                raise ExportError("layer %d (%s): projection '%s' has weight %s, expected %s "
                                  "(from '%s' = [d_ff, d_model])"
                                  % (self.index, self.path, self.rel[key],
                                     list(w.shape), list(want[key]), self.rel["in"]))
        self.d_ff, self.d_model = d_ff, d_model

    def _detect_activation(self, module, inp):
        near = _submodule(module, _parent_path(inp)) if "." in inp else module
        for where in (near, module):
            acts = activations_in(where)
            if len(acts) == 1:
                self.act, self.act_source = acts.pop(), "module"
                return
            if len(acts) > 1:
                break  # ambiguous: let the first batch decide

    def hook(self):
        def on_in(_mod, inputs):
            if self.pending_x is not None:
                self._ran_twice("in")
            self.pending_x = self._first(inputs, "in")

        def on_out(_mod, inputs):
            h = self._first(inputs, "out")
            if self.pending_x is None:
                raise ExportError("layer %d (%s): '%s' ran without '%s' before it"
                                  % (self.index, self.path, self.rel["out"], self.rel["in"]))
            if self.runs:
                self._ran_twice("out")
            x, self.pending_x = self.pending_x, None
            self.runs += 1
            self.batch.take(self, x, h)
        self.handles = [self.mods["in"].register_forward_pre_hook(on_in),
                        self.mods["out"].register_forward_pre_hook(on_out)]

    def _ran_twice(self, key):
        raise ExportError("layer %d (%s): '%s' ran more than once in one forward pass (shared "
                          "layers are not supported)" % (self.index, self.path, self.rel[key]))

    def _first(self, inputs, key):
        if not inputs:
            raise ExportError("layer %d (%s): '%s' was called without a positional input"
                              % (self.index, self.path, self.rel[key]))
        return inputs[0].detach()

    def unhook(self):
        for h in self.handles:
            h.remove()
        self.handles = []

    def start(self, batch):
        self.pending_x, self.runs, self.batch = None, 0, batch

    def finish(self):
        """After a forward pass: the layer must have run exactly once."""
        if not self.runs:
            raise ExportError("layer %d (%s): '%s' did not run in a forward pass: the layer "
                              "was skipped, or a fused fast path bypassed its modules (e.g. "
                              "nn.TransformerEncoderLayer with batch_first=True in eval mode)"
                              % (self.index, self.path,
                                 self.rel["out" if self.pending_x is not None else "in"]))
        self.pending_x, self.batch = None, None

    # The check: h recomputed from x and the weights against the captured h.
    def recompute(self, x, act):
        torch = _torch()
        dt = torch.promote_types(x.dtype, torch.float32)
        x = x.to(dt)
        pre = x @ self.w["in"].to(dt).t()
        if self.b["in"] is not None:
            pre = pre + self.b["in"].to(dt)
        if self.gated:
            return apply_activation(act, x @ self.w["gate"].to(dt).t()) * pre
        return apply_activation(act, pre)

    def rel_err(self, x, h, act):
        ref = self.recompute(x, act)
        h = h.to(ref.dtype)
        if ref.numel() == 0:
            return 0.0
        scale = max(float(h.abs().max()), float(ref.abs().max()), 1e-30)
        err = float((ref - h).abs().max()) / scale
        return err if math.isfinite(err) else float("inf")

    def infer_activation(self, x, h, tol):
        errs = {a: self.rel_err(x, h, a) for a in ACTIVATIONS}
        best = min(ACTIVATIONS, key=lambda a: errs[a])
        if errs[best] > tol:
            raise ExportError("layer %d (%s): cannot tell its activation: none of %s reproduces "
                              "the model's h (best %s, relative max error %.3g, tolerance %.3g); "
                              "pass --act, or point --in/--out/--gate at the right modules"
                              % (self.index, self.path, ", ".join(ACTIVATIONS), best,
                                 errs[best], tol))
        self.act, self.act_source = best, "inferred"

    def check_shapes(self, x, h):
        if tuple(x.shape[-1:]) != (self.d_model,) or tuple(h.shape[-1:]) != (self.d_ff,):
            raise ExportError("layer %d (%s): captured x %s and h %s do not fit d_model = %d, "
                              "d_ff = %d" % (self.index, self.path, list(x.shape),
                                             list(h.shape), self.d_model, self.d_ff))

    def check(self, x, h, tol, batch_no):
        err = self.rel_err(x, h, self.act)
        self.worst = max(self.worst, err)
        if not err <= tol:
            how = {"given": "given", "module": "found in the module",
                   "inferred": "inferred"}[self.act_source]
            raise ExportError("layer %d (%s): h recomputed with activation '%s' (%s) differs "
                              "from the model's h by relative max error %.3g on batch %d "
                              "(tolerance %.3g): wrong --act, or this FFN does not compute %s"
                              % (self.index, self.path, self.act, how, err, batch_no, tol,
                                 "act(x W_gate^T) * (x W_in^T + b_in)" if self.gated
                                 else "act(x W_in^T + b_in)"))


# ---- batches ----------------------------------------------------------------------------

def _to_device(obj, device):
    torch = _torch()
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, collections.abc.Mapping):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


def _run(model, batch):
    torch = _torch()
    if isinstance(batch, torch.Tensor):
        return model(batch)
    if isinstance(batch, collections.abc.Mapping):
        return model(**batch)
    if isinstance(batch, (tuple, list)):
        return model(*batch)
    raise ExportError("a batch must be a tensor, a dict or a tuple, found %s"
                      % type(batch).__name__)


def _batch_layout(batch):
    """(primary tensor, ids or None, mask [B, L] bool or None) of one batch."""
    torch = _torch()
    primary, mask = None, None
    if isinstance(batch, torch.Tensor):
        primary = batch
    elif isinstance(batch, collections.abc.Mapping):
        primary = batch.get("input_ids", batch.get("inputs_embeds"))
        mask = batch.get("attention_mask")
    elif isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        primary = batch[0]
        second = batch[1] if len(batch) > 1 else None
        # (ids, attention_mask): a second tensor of ids' shape holding only 0 and 1
        if isinstance(second, torch.Tensor) and not second.is_floating_point() \
                and tuple(second.shape) == tuple(primary.shape[:2]) \
                and bool(((second == 0) | (second == 1)).all()):
            mask = second
    if primary is None:
        raise ExportError("cannot find the token ids of a batch (expected a tensor, a dict "
                          "with input_ids or inputs_embeds, or a tuple starting with ids)")
    if primary.dim() == 1 or (primary.dim() == 2 and primary.is_floating_point()):
        primary = primary.unsqueeze(0)
        mask = mask.unsqueeze(0) if mask is not None and mask.dim() == 1 else mask
    ids = primary if not primary.is_floating_point() else None
    if mask is not None:
        if tuple(mask.shape) != tuple(primary.shape[:2]):
            raise ExportError("attention_mask has shape %s, expected %s"
                              % (list(mask.shape), list(primary.shape[:2])))
        mask = mask.to(torch.bool)
    return primary, ids, mask


def _rows(t, B, L, mask, seq_first):
    """t's rows as [n, d] with padding removed, and whether they align with the tokens."""
    d = t.shape[-1]
    if t.dim() == 2 and t.shape[0] == B * L:
        t = t.reshape(L, B, d).transpose(0, 1) if seq_first else t.reshape(B, L, d)
    elif t.dim() == 3 and tuple(t.shape[:2]) == (L, B) and (seq_first or B != L):
        t = t.transpose(0, 1)
    if t.dim() == 3 and tuple(t.shape[:2]) == (B, L):
        return (t[mask] if mask is not None else t.reshape(-1, d)), True
    n_real = int(mask.sum()) if mask is not None else B * L
    flat = t.reshape(-1, d)
    return flat, flat.shape[0] == n_real


# ---- the HDF5 file ----------------------------------------------------------------------

class Sink:
    """The output file: groups and weights written up front, activation rows appended."""

    def __init__(self, path, layers, dtype, gzip, store_h, model_name, text):
        import h5py
        import numpy as np
        self.np = np
        self.dtype = np.dtype(dtype)
        self.comp = {"compression": "gzip", "compression_opts": int(gzip), "shuffle": True} \
            if gzip else {}
        self.f = h5py.File(path, "w", rdcc_nbytes=8 << 20)
        self.f.attrs["moescope_format"] = 1
        if model_name:
            self.f.attrs["model_name"] = model_name
        if text:
            self.f.create_dataset("text", data=text)
        self.rows = {}
        for lay in layers:
            g = self.f.create_group("layers/%d" % lay.index)
            g.attrs["name"] = lay.path
            g.attrs["activation"] = lay.act or "relu"
            for key, (wname, bname) in (("in", ("w_in", "b_in")), ("gate", ("w_gate", None)),
                                        ("out", ("w_out", "b_out"))):
                if key not in lay.w:
                    continue
                self._weights(g, wname, lay.w[key], lay)
                if bname and lay.b[key] is not None:
                    self._weights(g, bname, lay.b[key], lay)
            self.rows[lay.index] = {"x": self._rows(g, "x", lay.d_model)}
            if store_h:
                self.rows[lay.index]["h"] = self._rows(g, "h", lay.d_ff)
        self.tokens = None
        self.offsets = self.f.create_dataset("seq_offsets", data=np.zeros(1, np.int64),
                                             maxshape=(None,), chunks=(4096,))

    def _numpy(self, t, what, lay):
        torch = _torch()
        wide = t.detach().to("cpu", torch.float32).numpy()
        with self.np.errstate(over="ignore"):  # reported below, naming the layer
            a = wide.astype(self.dtype)
        if not self.np.isfinite(a).all():
            bad = "values beyond the float16 range" if self.np.isfinite(wide).all() \
                else "non-finite values"
            raise ExportError("layer %d (%s): %s has %s; %s"
                              % (lay.index, lay.path, what, bad,
                                 "export with float32" if self.dtype == self.np.float16
                                 else "the model produced them"))
        return a

    def _weights(self, g, name, t, lay):
        a = self._numpy(t, name, lay)
        g.create_dataset(name, data=a, **(self.comp if a.size > 1 else {}))

    def _rows(self, g, name, d):
        chunk = max(1, min(4096, (1 << 20) // (d * self.dtype.itemsize)))
        return g.create_dataset(name, shape=(0, d), maxshape=(None, d), chunks=(chunk, d),
                                dtype=self.dtype, **self.comp)

    @staticmethod
    def _append(dset, a):
        n = dset.shape[0]
        dset.resize(n + a.shape[0], axis=0)
        dset[n:] = a

    def append_layer(self, lay, x, h):
        ds = self.rows[lay.index]
        self._append(ds["x"], self._numpy(x, "x", lay))
        if "h" in ds:
            self._append(ds["h"], self._numpy(h, "h", lay))

    def append_tokens(self, ids, lengths):
        np = self.np
        if ids is not None:
            if self.tokens is None:
                self.tokens = self.f.create_dataset("tokens", shape=(0,), maxshape=(None,),
                                                    chunks=(16384,), dtype=np.int32)
            self._append(self.tokens, ids.to("cpu").numpy().astype(np.int32))
        lengths = [n for n in lengths if n > 0]
        if lengths:
            last = int(self.offsets[-1])
            self._append(self.offsets, last + np.cumsum(lengths, dtype=np.int64))

    def set_activation(self, lay):
        self.f["layers/%d" % lay.index].attrs["activation"] = lay.act

    def drop_alignment(self):
        for name in ("tokens", "seq_offsets"):
            if name in self.f:
                del self.f[name]

    def close(self):
        self.f.close()


# ---- the export -------------------------------------------------------------------------

def export(model, batches, out_path, ffn_pattern=None, family="auto", in_name=None,
           out_name=None, gate_name=None, act=None, dtype="float32", gzip=0, store_h=True,
           check=True, tol=None, model_name=None, text=None, max_batches=None,
           seq_first=False, log=None, progress=None):
    """Run `batches` through `model` and write the FFN layers matching `ffn_pattern` (a
    string or list of module-path globs, 're:' for a regular expression; None finds the
    FFNs of known families) to `out_path` in moescope's format. Returns a dict with n_tokens,
    n_seq, batches and layers (index, name, d_model, d_ff, gated, activation,
    activation_source, n_tokens, max_rel_err). `log(message)` receives warnings,
    `progress(batches, tokens)` is called after each batch. model_name defaults to the
    model's class name. Raises ExportError on bad input or a failed check,
    leaving no file behind."""
    if act is not None and act not in ACTIVATIONS:
        raise ExportError("unknown activation '%s' (expected one of %s)"
                          % (act, ", ".join(ACTIVATIONS)))
    if dtype not in ("float16", "float32"):
        raise ExportError("dtype must be float16 or float32, found '%s'" % dtype)
    patterns = [ffn_pattern] if isinstance(ffn_pattern, str) else list(ffn_pattern or [])
    names = {"in": in_name, "out": out_name, "gate": gate_name}
    found = find_layers(model, patterns, family, names)
    model.eval()
    layers = [Layer(i, path, mod, fam, act) for i, (path, mod, fam) in enumerate(found)]
    say = log or (lambda _msg: None)
    tmp = "%s.tmp%d" % (out_path, os.getpid())
    sink = None
    try:
        try:
            sink = Sink(tmp, layers, dtype, gzip, store_h,
                        type(model).__name__ if model_name is None else model_name, text)
        except OSError as e:
            raise ExportError("cannot create '%s': %s" % (out_path, e)) from e
        summary = _stream(model, batches, layers, sink, check, tol, max_batches, seq_first,
                          say, progress or (lambda _b, _t: None))
        sink.close()
        sink = None
        os.replace(tmp, out_path)
    finally:
        for lay in layers:
            lay.unhook()
        if sink is not None:
            sink.close()
        if os.path.exists(tmp):
            os.remove(tmp)
    summary["path"] = out_path
    return summary


def _default_tol(x):
    torch = _torch()
    return 2e-2 if x.dtype in (torch.float16, torch.bfloat16) else 1e-4


class _Batch:
    """One batch in flight: how its rows map to tokens, and what to do with each layer's
    x and h as soon as the layer has run."""

    def __init__(self, number, B, L, mask, seq_first, sink, check, tol):
        self.number, self.B, self.L, self.mask, self.seq_first = number, B, L, mask, seq_first
        self.sink, self.check, self.tol = sink, check, tol
        self.unaligned = None

    def take(self, lay, x, h):
        lay.check_shapes(x, h)
        x, ok_x = _rows(x, self.B, self.L, self.mask, self.seq_first)
        h, ok_h = _rows(h, self.B, self.L, self.mask, self.seq_first)
        if x.shape[0] != h.shape[0]:
            raise ExportError("layer %d (%s): %d rows of x but %d rows of h in batch %d"
                              % (lay.index, lay.path, x.shape[0], h.shape[0], self.number))
        if not (ok_x and ok_h) and self.unaligned is None:
            self.unaligned = lay
        tol = self.tol if self.tol is not None else _default_tol(x)
        if lay.act is None:
            lay.infer_activation(x, h, tol)
            self.sink.set_activation(lay)
        if self.check:
            lay.check(x, h, tol, self.number)
        self.sink.append_layer(lay, x, h)
        lay.n_tokens += x.shape[0]


def _stream(model, batches, layers, sink, check, tol, max_batches, seq_first, say,
            progress):
    torch = _torch()
    params = next(model.parameters(), None)
    device = params.device if params is not None else torch.device("cpu")
    for lay in layers:
        lay.hook()
    n_tokens, n_seq, n_batches, unaligned = 0, 0, 0, None
    with torch.no_grad():
        for batch in batches:
            if max_batches is not None and n_batches >= max_batches:
                break
            batch = _to_device(batch, device)
            primary, ids, mask = _batch_layout(batch)
            B, L = int(primary.shape[0]), int(primary.shape[1])
            run = _Batch(n_batches, B, L, mask, seq_first, sink, check, tol)
            for lay in layers:
                lay.start(run)
            _run(model, batch)
            for lay in layers:
                lay.finish()
            unaligned = unaligned or run.unaligned
            lengths = mask.sum(dim=1).tolist() if mask is not None else [L] * B
            sink.append_tokens(ids[mask] if ids is not None and mask is not None else
                               (ids.reshape(-1) if ids is not None else None), lengths)
            n_tokens += sum(lengths)
            n_seq += sum(1 for n in lengths if n > 0)
            n_batches += 1
            progress(n_batches, n_tokens)
    if n_batches == 0 or n_tokens == 0:
        raise ExportError("no tokens: the batches were empty")
    if unaligned is not None:
        sink.drop_alignment()
        say("warning: layer %d (%s) does not see one row per token; /tokens and /seq_offsets "
            "left out" % (unaligned.index, unaligned.path))
    return {"n_tokens": n_tokens, "n_seq": n_seq if unaligned is None else None,
            "batches": n_batches,
            "layers": [{"index": lay.index, "name": lay.path, "d_model": lay.d_model,
                        "d_ff": lay.d_ff, "gated": lay.gated, "activation": lay.act,
                        "activation_source": lay.act_source, "n_tokens": lay.n_tokens,
                        "max_rel_err": lay.worst if check else None} for lay in layers]}


# ---- command line -----------------------------------------------------------------------

def load_factory(spec, kwargs):
    """Call FILE.py:FUNC with kwargs; returns (model, batches, model_name, text)."""
    if ":" not in spec:
        raise ExportError("--model-module expects FILE.py:FUNCTION, found '%s'" % spec)
    path, func = spec.rsplit(":", 1)
    if not os.path.isfile(path):
        raise ExportError("--model-module: no file '%s'" % path)
    mod_name = "moescope_export_factory_" + re.sub(r"\W", "_", os.path.basename(path))
    loader = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(loader)
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    loader.loader.exec_module(module)
    fn = getattr(module, func, None)
    if not callable(fn):
        raise ExportError("--model-module: '%s' has no function '%s'" % (path, func))
    got = fn(**kwargs)
    if isinstance(got, collections.abc.Mapping):
        if "model" not in got or "batches" not in got:
            raise ExportError("%s returned a dict without 'model' and 'batches'" % spec)
        return got["model"], got["batches"], got.get("model_name"), got.get("text")
    if isinstance(got, (tuple, list)) and len(got) in (2, 3):
        return got[0], got[1], None, (got[2] if len(got) == 3 else None)
    raise ExportError("%s must return (model, batches), (model, batches, text) or a dict"
                      % spec)


def parse_args(argv):
    doc = __doc__.split("\n\n", 1)
    p = argparse.ArgumentParser(prog="moescope-export", description=doc[0],
                                epilog=doc[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-module", required=True, metavar="FILE.py:FUNC",
                   help="function returning (model, batches[, text]) or a dict")
    p.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE",
                   help="keyword argument for the factory (repeatable)")
    p.add_argument("--ffn", action="append", default=[], metavar="PATTERN",
                   help="module paths of the FFN layers: a glob (* within a component, ** "
                        "across dots) or 're:REGEX' (repeatable; default: every module of "
                        "a known family)")
    p.add_argument("--family", default="auto", choices=("auto", "plain", "gated"),
                   help="look only for plain or gated FFNs (default: either)")
    p.add_argument("--in", dest="in_name", metavar="NAME",
                   help="first (up) projection, relative to the FFN module")
    p.add_argument("--out", dest="out_name", metavar="NAME",
                   help="second (down) projection, relative to the FFN module")
    p.add_argument("--gate", dest="gate_name", metavar="NAME",
                   help="gate projection of a gated FFN, relative to the FFN module")
    p.add_argument("--act", choices=ACTIVATIONS, help="the FFN's activation")
    p.add_argument("--float16", action="store_true", help="store floats as float16")
    p.add_argument("--gzip", type=int, default=0, metavar="N",
                   help="gzip level 1-9 with the shuffle filter (default 0: none)")
    p.add_argument("--no-h", action="store_true",
                   help="do not store h (moescope recomputes it from x and the weights)")
    p.add_argument("--no-check", action="store_true", help="skip the h check")
    p.add_argument("--tol", type=float, metavar="X",
                   help="check tolerance (default 1e-4, 2e-2 for half-precision models)")
    p.add_argument("--max-batches", type=int, metavar="N", help="stop after N batches")
    p.add_argument("--seq-first", action="store_true",
                   help="FFN inputs are [seq, batch, d] (nn.Transformer without batch_first)")
    p.add_argument("--model-name", help="root attribute model_name (default: the class name)")
    p.add_argument("--text", help="/text: a description of the text (default from the factory)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.h5")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    a = p.parse_args(argv)
    if not 0 <= a.gzip <= 9:
        p.error("--gzip expects a level from 0 to 9, found %d" % a.gzip)
    return a


def main(argv=None):
    a = parse_args(sys.argv[1:] if argv is None else argv)
    log = (lambda msg: None) if a.quiet else (lambda msg: print(msg, file=sys.stderr))
    tty = not a.quiet and sys.stderr.isatty()
    progress = (lambda b, t: print("\rbatch %d, %d tokens" % (b, t), end="",
                                   file=sys.stderr)) if tty else None
    try:
        kwargs = {}
        for kv in a.arg:
            if "=" not in kv:
                raise ExportError("--arg expects KEY=VALUE, found '%s'" % kv)
            k, v = kv.split("=", 1)
            kwargs[k] = v
        model, batches, name, text = load_factory(a.model_module, kwargs)
        res = export(model, batches, a.output, ffn_pattern=a.ffn, family=a.family,
                     in_name=a.in_name, out_name=a.out_name, gate_name=a.gate_name,
                     act=a.act, dtype="float16" if a.float16 else "float32", gzip=a.gzip,
                     store_h=not a.no_h, check=not a.no_check, tol=a.tol,
                     model_name=a.model_name or name,
                     text=a.text or text, max_batches=a.max_batches,
                     seq_first=a.seq_first, log=log, progress=progress)
    except ExportError as e:
        if tty:
            print(file=sys.stderr)
        print("moescope-export: %s" % e, file=sys.stderr)
        return 2
    if tty:
        print(file=sys.stderr)
    for lay in res["layers"]:
        err = "" if lay["max_rel_err"] is None else ", h check max rel err %.2g" % \
            lay["max_rel_err"]
        log("layer %d %s: d_model %d, d_ff %d, %s%s (%s)%s"
            % (lay["index"], lay["name"], lay["d_model"], lay["d_ff"],
               "gated " if lay["gated"] else "", lay["activation"],
               lay["activation_source"], err))
    seqs = "" if res["n_seq"] is None else ", %d sequences" % res["n_seq"]
    log("wrote %s: %d layers, %d tokens%s, %d batches"
        % (a.output, len(res["layers"]), res["n_tokens"], seqs, res["batches"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
