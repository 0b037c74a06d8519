"""What people read and say: the core commands every surface calls, the /ops parser, wording, the
notifier, the proposal view and the digest.
"""
