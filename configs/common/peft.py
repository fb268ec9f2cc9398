"""LoRA settings for any d2geo config (Hugging Face peft; ``pip install 'd2geo[peft]'``)::

    from ..common.peft import lora
    model.backbone.net.peft = lora

or on the command line: ``'model.backbone.net.peft={r: 8, lora_alpha: 16}'``. The adapters
go on every block's fused ``attn.qkv`` and ``attn.proj``; the encoder's original weights are
frozen, its norms, the pyramid and the head train. Raise the learning rate (LoRA commonly
uses ~10x the full fine-tuning rate) and set ``optimizer.params.lr_decay_rate = 1.0`` if
the adapters should all learn at the same rate. Merge for export / model-zoo files with
``tools/convert_checkpoint.py --merge-peft``.
"""
lora = dict(method="lora", r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["qkv", "proj"])
