"""Network acquisition: HTTP downloads (resumable, verified) and STAC catalogue access.

Beside :mod:`s2landcover.io` (local files) because its failures are of another kind: a catalogue or
server that is down, slow or answers an error raises :class:`s2landcover.errors.AcquisitionError`
(retry later), not :class:`s2landcover.errors.InputError` (fix your input). The stage that uses
it is :mod:`s2landcover.download`.
"""
