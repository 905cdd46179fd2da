"""``python -m jupyter_tfenv.broker [--config FILE] [--ip IP] [--port N] [--TFEnvBroker.x=y]``."""

from __future__ import annotations

from jupyter_tfenv.broker import main

if __name__ == "__main__":
    main()
