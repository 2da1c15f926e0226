from __future__ import annotations

from enclave.cli import main

main()
