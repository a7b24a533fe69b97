"""The generator models, loaded offline: `load_generator("sd-turbo" | "tiny" | "sd-turbo-random" | PATH)`.

```python
from libpromptus.models import load_generator

generator = load_generator()            # $PROMPTUS_MODEL, else "sd-turbo"
generator.to("cuda", torch.float16)     # loaded on the CPU in float32
generator.identity()                    # SPEC.md §7 model hash, 32 bytes
```

Nothing is ever downloaded. `sd-turbo` is looked for in an explicit path, then in
`$PROMPTUS_MODEL_DIR` (default `~/.cache/libpromptus/models`), then in the Hugging Face
cache (see `locations`); `tiny`, the project's test model, ships in the package;
`sd-turbo-random`, SD-Turbo's architecture with seeded random weights (its streams name
`sd-turbo`), is built in memory (see `random_weights`).
`load_latent_encoder` gives the encoder of first-frame latents (SD VAE or TAESD).
"""
from .identity import model_identity
from .latent_encoder import LatentEncoder, load_latent_encoder
from .loading import Generator, ModelIntegrityError, load_generator, load_path
from .locations import ModelNotFoundError, hf_hub_cache, model_dir, resolve_model

__all__ = [
    "Generator",
    "LatentEncoder",
    "ModelIntegrityError",
    "ModelNotFoundError",
    "hf_hub_cache",
    "load_generator",
    "load_latent_encoder",
    "load_path",
    "model_dir",
    "model_identity",
    "resolve_model",
]
