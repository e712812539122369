"""``python -m trainers.jax_pmap``."""

from trainers.jax_pmap.trainer import main

if __name__ == "__main__":
    raise SystemExit(main())
