using Kmem.Sheaves;
using Kmem.Slab;

namespace Kmem;

/// <summary>
/// Cache merging (SLUB's find_mergeable/__kmem_cache_alias): a new cache whose objects
/// would be laid out like an existing cache's becomes another handle on it, sharing its
/// slabs, sheaves and barn, so similar caches do not each keep partly empty slabs.
/// </summary>
/// <remarks>
/// Every handle (the creating one and its aliases) is a <see cref="SlabCache"/> with its
/// own name and its own Dispose over this one core; the core lives while any handle does,
/// and the last handle's Dispose destroys it (kmem_cache_destroy on a merged cache drops
/// a reference). A disposed handle forgets the core, so its later use is reported whichever
/// handle it was. Live objects are counted per core, so Dispose reports them when the
/// last handle goes.
/// </remarks>
internal sealed unsafe partial class SlabCacheCore
{
    /// <summary>Flags that forbid merging (SLAB_NEVER_MERGE): debug, RCU and explicit NoMerge.</summary>
    private const SlabFlags NeverMerge = SlabFlags.NoMerge | SlabFlags.ConsistencyChecks | SlabFlags.TypesafeByRcu
        | SlabFlags.RedZone | SlabFlags.Poison | SlabFlags.StoreUser;

    /// <summary>Flags two caches must agree on to merge (SLAB_MERGE_SAME).</summary>
    private const SlabFlags MergeSame = SlabFlags.Account | SlabFlags.RandomizeFreelist;

    /// <summary>Names of the handles after the first (the caches merged into this one).</summary>
    internal IReadOnlyList<string> AliasNames
    {
        get
        {
            using (SlabCacheRegistry.Lock.Scope())
                return [.. _handles.Skip(1).Select(h => h.Name)];
        }
    }

    /// <summary>True when <paramref name="handle"/> is the one that created this cache.</summary>
    internal bool IsFirstHandle(SlabCache handle)
    {
        using (SlabCacheRegistry.Lock.Scope())
            return _handles.Count > 0 && ReferenceEquals(_handles[0], handle);
    }

    private static bool IsMergeable(SlabCacheOptions options) =>
        !options.HasConstructor && !options.HasDestructor && (options.Flags & NeverMerge) == 0;

    /// <summary>A new handle, made by <paramref name="newHandle"/>: on a mergeable existing core (its second argument true), else on a new one.</summary>
    internal static SlabCacheCore CreateOrMerge(string name, int objectSize, SlabCacheOptions options, Func<SlabCacheCore, bool, SlabCache> newHandle, out SlabCache handle)
    {
        using (SlabCacheRegistry.Lock.Scope())
        {
            SlabCacheCore? core = IsMergeable(options) ? FindMergeable(objectSize, options) : null;
            bool merged = core != null;
            core ??= new SlabCacheCore(name, objectSize, options);
            handle = newHandle(core, merged);
            core._handles.Add(handle);
            return core;
        }
    }

    /// <summary>
    /// find_mergeable(): a core whose stride holds the object at an alignment it already
    /// honours, wasting less than a pointer per object, with the same must-match flags.
    /// </summary>
    private static SlabCacheCore? FindMergeable(int objectSize, SlabCacheOptions options)
    {
        int align = EffectiveAlign(objectSize, options);
        int size = Slab.SlabLayout.AlignUp(Math.Max(objectSize, sizeof(void*)), align);
        foreach (SlabCacheCore s in SlabCacheRegistry.RootsLocked().Reverse())
        {
            if (s._disposed || s._handles.Count == 0 || (s.Flags & NeverMerge) != 0 || s._lifecycle)
                continue;
            if (size > s.Stride || (options.Flags & MergeSame) != (s.Flags & MergeSame))
                continue;
            if (s.Stride % align != 0 || s._layout.ObjectOffset % align != 0)
                continue;
            if (s.Stride - size >= sizeof(void*))
                continue;
            return s;
        }
        return null;
    }

    /// <summary>
    /// Drops <paramref name="handle"/>; the last handle destroys the cache (strict:
    /// refusing with live objects, and then nothing changes). False only for that
    /// refusal; true for a handle already dropped. Caller holds slab_mutex.
    /// </summary>
    internal bool Release(SlabCache handle, bool strict, out IReadOnlyList<nint> liveObjects)
    {
        liveObjects = [];
        int i = _handles.IndexOf(handle);
        if (i < 0)
            return true;
        if (_handles.Count == 1 && !DestroyCore(strict, out liveObjects))
            return false;
        _handles.RemoveAt(i);
        return true;
    }
}
