"""Will a training job fit? Its memory per GPU, estimated from the config before any job runs.

    python -m compute_optimal.memory experiment=paper_train regime=weak_to_strong   # any run_train.py overrides

Model and optimizer states by ZeRO stage come from DeepSpeed's own estimators
(``estimate_zero2/3_model_states_mem_needs``); activations (with and without gradient checkpointing), the
logits of the vocabulary at the micro-batch's tokens and the resume state's size on disk are counted here
from the student's architecture (a meta-device model: no weights loaded). ``site.gpu_mem_gb`` is the GPU
memory the site gives; a plan over it is refused with the numbers and what to change.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from .errors import UserError

GIB = 2**30
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


class DoesNotFitError(UserError, ValueError):
    """A training job whose estimated memory per GPU exceeds what the site gives."""


@dataclass(frozen=True)
class Shape:
    """What the estimate reads from a causal LM's config (counted on a meta-device model)."""

    params: int  # unique parameters (tied embeddings once)
    largest_layer_params: int  # the largest single module's own parameters (ZeRO-3 gathers it whole)
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    norms_per_layer: int  # 2 (Llama), 4 (Gemma2)
    logit_softcap: bool  # Gemma2 caps the final logits: tanh keeps another copy


def shape_of(config: Any) -> Shape:
    """A transformers config -> its ``Shape``; the model is built on the meta device (no memory)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    params = sum({id(p): p.numel() for p in model.parameters()}.values())
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    heads = int(config.num_attention_heads)
    return Shape(
        params=params,
        largest_layer_params=largest,
        hidden=int(config.hidden_size),
        intermediate=int(config.intermediate_size),
        layers=int(config.num_hidden_layers),
        heads=heads,
        kv_heads=int(getattr(config, "num_key_value_heads", None) or heads),
        head_dim=int(getattr(config, "head_dim", None) or config.hidden_size // heads),
        vocab=int(config.vocab_size),
        norms_per_layer=4 if config.model_type.startswith("gemma2") else 2,
        logit_softcap=bool(getattr(config, "final_logit_softcapping", None)),
    )


@dataclass(frozen=True)
class Job:
    """What a training config asks of each GPU."""

    nodes: int
    gpus_per_node: int
    zero_stage: int  # 0: no ZeRO (one device, DDP)
    offload_optimizer: bool
    offload_params: bool
    micro_batch: int
    seq_len: int
    weights_dtype: str
    checkpointing: bool
    eager_attention: bool  # attention scores materialised (eager; Gemma2's soft-cap needs it)

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node


@dataclass(frozen=True)
class MemoryPlan:
    shape: Shape
    job: Job
    states: int  # bytes per GPU: weights, gradients, optimizer states
    activations: int  # bytes per GPU with the job's checkpointing setting
    activations_other: int  # with the other setting
    logits: int
    resume_state: int  # bytes on disk, all ranks together (two coexist while the next is written)

    @property
    def peak(self) -> int:
        return self.states + self.activations + self.logits

    def render(self, gpu_mem_gb: float | None = None) -> str:
        j, s = self.job, self.shape
        ckpt = "on" if j.checkpointing else "off"
        rows = [
            f"memory plan: {s.params / 1e9:.2f}B parameters, {j.nodes} node(s) x {j.gpus_per_node} GPU(s), "
            f"ZeRO-{j.zero_stage}"
            + (" + offload" if j.offload_optimizer else "")
            + f", micro-batch {j.micro_batch} x {j.seq_len} tokens, {j.weights_dtype} weights",
            f"  model + optimizer states  {self.states / GIB:8.1f} GiB per GPU (DeepSpeed's estimator)",
            f"  activations               {self.activations / GIB:8.1f} GiB (checkpointing {ckpt}; "
            f"{'off' if j.checkpointing else 'on'}: {self.activations_other / GIB:.1f})",
            f"  {f'logits ({s.vocab:,} vocab)':<26}{self.logits / GIB:8.1f} GiB",
            f"  peak                      {self.peak / GIB:8.1f} GiB per GPU"
            + (f" of {gpu_mem_gb:g} GB the site gives" if gpu_mem_gb else ""),
            f"  resume state on disk      {self.resume_state / GIB:8.1f} GiB (x2 while the next is written)",
        ]
        return "\n".join(rows)

    def advice(self) -> list[str]:
        """What would bring the peak down, largest saving first."""
        j, tips = self.job, []
        if not j.checkpointing and self.activations > self.activations_other:
            tips.append(
                f"train.gradient_checkpointing=true (activations {self.activations_other / GIB:.1f} GiB)"
            )
        if j.micro_batch > 1:
            tips.append(
                f"a smaller micro-batch (train.batch_size={j.micro_batch // 2}) with twice the "
                "trainer.accumulate_grad_batches: the same step, half the activations and logits"
            )
        if j.zero_stage < 3:
            tips.append("trainer=deepspeed_zero3 (states split over every GPU)")
        elif not j.offload_optimizer:
            tips.append("trainer=deepspeed_zero3_offload (optimizer states in CPU memory)")
        tips.append(f"more GPUs (resources.train.nodes > {j.nodes}): states split further")
        return tips


def states_bytes(shape: Shape, job: Job) -> int:
    """Weights, gradients and Adam states per GPU. DeepSpeed: its estimators (16-bit weights with fp32
    master copies); otherwise fp32 weights, gradients and two Adam moments on every GPU (16 bytes each)."""
    if job.zero_stage == 3:
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

        _, gpu, _ = estimate_zero3_model_states_mem_needs(
            shape.params, shape.largest_layer_params, job.gpus_per_node, job.nodes,
            cpu_offload=job.offload_optimizer, cpu_offload_params=job.offload_params, zero_init=True,
        )  # fmt: skip
        return int(gpu)
    if job.zero_stage in (1, 2):
        from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

        _, gpu = estimate_zero2_model_states_mem_needs(
            shape.params, job.gpus_per_node, job.nodes, cpu_offload=job.offload_optimizer
        )
        return int(gpu)
    return 16 * shape.params


def activation_bytes(shape: Shape, job: Job, *, checkpointing: bool) -> int:
    """Tensors autograd keeps for the backward of one micro-batch, per GPU.

    Per layer and token: the inputs and outputs of its norms (2 x hidden each), queries, keys and values
    before and after the rotary embedding and the attention output (3 x (heads + 2 kv heads) x head_dim),
    the MLP's gate, up, activation and product (4 x intermediate); eager attention adds its scores and
    probabilities (2 x heads x sequence). With checkpointing only each layer's input stays, and one layer
    is recomputed at a time.
    """
    e = DTYPE_BYTES[job.weights_dtype]
    tokens = job.micro_batch * job.seq_len
    s = shape
    per_token = 2 * s.norms_per_layer * s.hidden + 3 * (s.heads + 2 * s.kv_heads) * s.head_dim
    per_token += 4 * s.intermediate
    scores = 2 * s.heads * job.seq_len if job.eager_attention else 0
    layer = e * tokens * (per_token + scores)
    if checkpointing:
        return e * tokens * s.hidden * s.layers + layer
    return layer * s.layers


def logits_bytes(shape: Shape, job: Job) -> int:
    """The logits of the vocabulary at every token of the micro-batch: the model-dtype logits, the fp32
    log-softmax the loss keeps, the fp32 gradient and, for 16-bit models, its model-dtype copy (and one
    copy more where the logits are soft-capped). 12 bytes an element in fp32 or bf16 (the CPU check in
    tests/test_memory.py measures it)."""
    e = DTYPE_BYTES[job.weights_dtype]
    per_element = e + 4 + 4 + (e if e != 4 else 0) + (e if shape.logit_softcap else 0)
    return job.micro_batch * job.seq_len * shape.vocab * per_element


def resume_state_bytes(shape: Shape, job: Job) -> int:
    """A resume state (fp32 master weights and two Adam moments, 12 bytes a parameter, and the weights in
    their dtype), all ranks together: ~380 GB for Gemma2-27B in bf16."""
    return shape.params * (12 + DTYPE_BYTES[job.weights_dtype])


def plan(shape: Shape, job: Job) -> MemoryPlan:
    return MemoryPlan(
        shape=shape,
        job=job,
        states=states_bytes(shape, job),
        activations=activation_bytes(shape, job, checkpointing=job.checkpointing),
        activations_other=activation_bytes(shape, job, checkpointing=not job.checkpointing),
        logits=logits_bytes(shape, job),
        resume_state=resume_state_bytes(shape, job),
    )


def check_fits(memory: MemoryPlan, gpu_mem_gb: float | None) -> None:
    """Refuse a plan whose peak exceeds the site's GPU memory (None: the site does not say; no check)."""
    if gpu_mem_gb is None or memory.peak <= gpu_mem_gb * 1e9:
        return
    tips = "\n".join(f"  - {t}" for t in memory.advice())
    raise DoesNotFitError(
        f"this training job needs about {memory.peak / GIB:.1f} GiB per GPU, more than the "
        f"{gpu_mem_gb:g} GB the site gives (site.gpu_mem_gb):\n{memory.render(gpu_mem_gb)}\nto fit:\n{tips}"
    )


def job_of(cfg: Any, *, eager_attention: bool) -> Job:
    """The ``Job`` of a composed run_train.py config (its trainer as on GPUs, its resources)."""
    from .specs import TrainSettings, plain
    from .training.stage import weights_dtype

    trainer = plain(cfg.trainer)
    hp = TrainSettings.from_config(cfg.train)
    resources = plain(cfg.resources) or {}
    options = trainer.get("strategy_options") or {}
    deepspeed = trainer.get("strategy") == "deepspeed"
    return Job(
        nodes=int(resources.get("nodes") or 1),
        gpus_per_node=max(int(resources.get("gpus_per_node") or 1), 1),  # 0 on a CPU site: one device
        zero_stage=int(options.get("stage", 0)) if deepspeed else 0,
        offload_optimizer=bool(options.get("offload_optimizer")),
        offload_params=bool(options.get("offload_parameters")),
        micro_batch=hp.batch_size,
        seq_len=hp.max_length,
        weights_dtype=weights_dtype(hp, trainer),
        checkpointing=hp.gradient_checkpointing,
        eager_attention=eager_attention,
    )


def plan_for_config(cfg: Any) -> MemoryPlan:
    """The memory plan of a composed run_train.py config."""
    from . import models
    from .stages.common import model_named, student_name

    student = model_named(cfg, student_name(cfg.regime.name, cfg.pair))
    if student.arch:
        folder = models.config_checkpoint(student)
    elif student.origin == "hub":
        raise UserError(
            f"model {student.name!r} has no arch block: add one (its Hub config.json's fields) to "
            f"conf/model/{student.name}.yaml so its memory can be planned without the Hub"
        )
    else:
        folder = models.resolve_checkpoint(student)
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder)
    if student.origin == "trained" and "vocab_size" not in student.arch:
        # A family member's own tokenizer is built with the family: its recipe's bound, not the embedded one's.
        config.vocab_size = int(student.pretrain["tokenizer"]["vocab_size"])
    job = job_of(cfg, eager_attention=student.attn_implementation == "eager")
    return plan(shape_of(config), job)


def main(argv: list[str] | None = None) -> None:
    from .recipes import compose_job

    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return
    cfg = compose_job("run_train.py", argv)
    memory = plan_for_config(cfg)
    gpu_mem_gb = cfg.site.get("gpu_mem_gb")
    print(memory.render(gpu_mem_gb))
    try:
        check_fits(memory, gpu_mem_gb)
    except DoesNotFitError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
