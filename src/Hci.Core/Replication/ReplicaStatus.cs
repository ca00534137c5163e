namespace Hci.Core.Replication;

/// <summary>How a replica answered a <see cref="ReplicaRequest"/>. The numeric values are the wire's.</summary>
public enum ReplicaStatus : byte
{
    /// <summary>Done.</summary>
    Ok = 0,

    /// <summary>Refused: the request's epoch is older than the newest the store has seen for the volume (the sender
    /// was fenced by a newer owner); <see cref="ReplicaRequest.ObservedEpoch"/> holds the store's.</summary>
    StaleEpoch = 1,

    /// <summary>A block of the range failed its checksum; no data was served. Read it from another replica and
    /// rewrite this one (read repair).</summary>
    ChecksumMismatch = 2,

    /// <summary>The device failed the I/O (<see cref="ReplicaRequest.Result"/> holds the negative errno).</summary>
    IoError = 3,

    /// <summary>The request is malformed (range, alignment, length, unknown device or operation).</summary>
    Invalid = 4,

    /// <summary>The store has no room for a new extent.</summary>
    NoSpace = 5,

    /// <summary>The replica could not be reached or did not answer in time; the request may or may not have been
    /// applied.</summary>
    Unavailable = 6,

    /// <summary>A payload's checksum did not match on arrival (corrupted on the wire); nothing was applied.</summary>
    BadPayload = 7,
}
