import signal

from tunesmith.cli import main

# A process started in the background by a non-interactive shell (`cmd &`, nohup, CI runners)
# inherits SIGINT as ignored, and Python then never raises KeyboardInterrupt. SIGINT is how a
# run is stopped with its checkpoint kept (`tunesmith ui`'s cancel sends it), so restore it.
signal.signal(signal.SIGINT, signal.default_int_handler)
raise SystemExit(main())
