"""``python -m trainers.torch_ddp``."""

from trainers.torch_ddp.trainer import main

if __name__ == "__main__":
    raise SystemExit(main())
