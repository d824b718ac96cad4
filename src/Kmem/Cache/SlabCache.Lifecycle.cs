using Kmem.Locking;
using Kmem.Sheaves;
using Kmem.Slab;

namespace Kmem;

/// <summary>Shrink, Dispose and statistics.</summary>
public sealed unsafe partial class SlabCache
{
    private readonly KLock _drainLock = new("sheaf_drain");
    private volatile bool _disposed;

    /// <summary>
    /// Returns every empty slab to the page layer, after draining the objects parked in
    /// every thread's sheaf (idle and exited threads included) and in the barn.
    /// </summary>
    public void Shrink()
    {
        SlabHeader* release = null;
        using (_drainLock.Scope())
        {
            if (_disposed)
                ThrowDisposed(null);
            DrainSheaves(ref release);
            using (_listLock.Scope())
                UnlinkAllEmpty(ref release);
        }
        ReleaseSlabs(release);
        Pages.Trim();
    }

    /// <summary>
    /// Destroys the cache: parked objects are drained and every slab is returned. With
    /// live objects it refuses, names them, and leaves the cache as it was, usable.
    /// Disposing twice is allowed. Must not run concurrently with use of the cache.
    /// </summary>
    /// <exception cref="SlabUsageException">Objects are still allocated.</exception>
    public void Dispose()
    {
        SlabHeader* release = null;
        using (_drainLock.Scope())
        {
            if (_disposed)
                return;
            DrainSheaves(ref release);
            long live;
            List<nint> named = [];
            using (_listLock.Scope())
            {
                live = _objectsOut;
                if (live != 0)
                    named = LiveObjects(8);
                else
                    UnlinkAllEmpty(ref release);
            }
            if (live != 0)
            {
                // Refuse, and leave the cache as it was: drained, but whole and usable.
                ReleaseSlabs(release);
                string list = string.Join(", ", named.Select(a => $"0x{a:x}"));
                throw new SlabUsageException(Name, named.Count > 0 ? named[0] : 0,
                    $"cache '{Name}': Dispose with {live} live object(s) ({list}{(live > named.Count ? ", ..." : "")}); free them first")
                { LiveObjects = live };
            }
            lock (_sheafTableLock)
            {
                _disposed = true;
                Sheaf*[] table = _sheaves;
                Volatile.Write(ref _sheaves, new Sheaf*[1]);
                foreach (Sheaf* s in table)
                {
                    if (s != null)
                        Sheaf.Destroy(s);
                }
            }
            _barn.Dispose();
        }
        ReleaseSlabs(release);
        Pages.Trim();
        SlabCacheRegistry.Remove(_index);
    }

    public SlabCacheStatistics GetStatistics()
    {
        long cached = 0;
        lock (_sheafTableLock)
        {
            foreach (Sheaf* s in _sheaves)
            {
                if (s != null)
                    cached += Volatile.Read(ref s->Count);
            }
        }
        if (!_disposed)
            cached += _barn.Objects;
        using (_listLock.Scope())
        {
            return new SlabCacheStatistics(
                ActiveObjects: _objectsOut - cached,
                TotalObjects: _slabCount * _layout.Objects,
                Slabs: _slabCount,
                BytesHeld: _slabCount * _layout.SlabSize,
                ConstructorCalls: 0,
                ConstructorFailures: 0,
                DestructorCalls: 0,
                ObjectSize: ObjectSize,
                Stride: _layout.Stride,
                ObjectsPerSlab: _layout.Objects,
                SlabSize: _layout.SlabSize,
                CachedObjects: cached,
                PartialSlabs: _partialCount,
                EmptySlabs: _emptyCount,
                SlabsAllocated: _slabsAllocated,
                SlabsFreed: _slabsFreed);
        }
    }

    public override string ToString() => $"SlabCache '{Name}' ({ObjectSize} B)";
}
