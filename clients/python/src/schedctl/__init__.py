"""schedctl: the command-line tool for boruta's users and admins."""

import os

# gRPC's C core writes INFO lines to stderr unless told otherwise (e.g. "Got goaway" when
# a scheduler hands over to a standby); a command's stderr is for its own messages. Set
# before anything imports grpc; GRPC_VERBOSITY set by the user still wins.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
