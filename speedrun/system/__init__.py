"""How a run uses the machine: ``parallel`` (the ``data`` mesh, ``shard_map`` + ``pmean``,
``jax.distributed``), ``precision`` (float32 / bfloat16 / float16 policies, dynamic loss scaling),
``env`` (what must be set before JAX starts: XLA flags, simulated CPU devices), ``cache`` (JAX's
persistent compilation cache: folder, on/off, hit or miss)."""
