"""The embedded Celery broker (no REDIS_URL): kombu's file-system transport, with messages that appear
whole.

kombu's `_put` creates the message file under its final name and then writes it, while `_get` takes
any file with that name without a lock: a worker polling at the wrong instant read an empty file and
stopped with "Unrecoverable error: JSONDecodeError" (`make run` then stopped everything; beat's
10-second exposure flush made it a matter of minutes). Here a message is written under a name no
queue matches and renamed into place, which POSIX makes atomic. settings.CELERY_BROKER_TRANSPORT
names this class.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

# `_get` takes only files named `<stamp>_<uuid>.<queue>.msg`; a file being written ends in this.
PARTIAL_SUFFIX = ".partial"


class Channel(filesystem.Channel):
    # kombu's own classes name the second parameter differently (message, payload); neither name fits both.
    def _put(self, queue: Any, message: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """Put `message` on `queue`: the file takes the name `_get` looks for once it is complete."""
        # The name kombu gives a message: its time orders the queue.
        filename = os.path.join(self.data_folder_out, f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg")
        try:
            with open(filename + PARTIAL_SUFFIX, "wb") as partial:
                partial.write(str_to_bytes(dumps(message)))
            os.replace(filename + PARTIAL_SUFFIX, filename)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {filename!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
