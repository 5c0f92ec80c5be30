"""Site-level DP with client-side clipping (`dp=client`): Flower's own `fixedclipping_mod`.

Flower's `DifferentialPrivacyClientSideFixedClipping` puts the clipping norm in the training
config; the mod clips the node's update to it before the reply leaves. Messages without that
norm (every other mode, and evaluation) pass untouched.
"""

from flwr.app import Context, Message
from flwr.app.message_type import MessageType
from flwr.clientapp.mod import fixedclipping_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM


def clip_when_asked(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Mod: `fixedclipping_mod` for training messages that carry a clipping norm."""
    configs = msg.content.config_records.values() if msg.has_content() else []
    asked = any(KEY_CLIPPING_NORM in config for config in configs)
    if msg.metadata.message_type == MessageType.TRAIN and asked:
        return fixedclipping_mod(msg, context, call_next)
    return call_next(msg, context)
