"""``python -m trainers.cupy_nccl``."""

from trainers.cupy_nccl.trainer import main

if __name__ == "__main__":
    raise SystemExit(main())
