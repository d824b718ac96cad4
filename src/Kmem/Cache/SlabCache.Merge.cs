using Kmem.Sheaves;
using Kmem.Slab;

namespace Kmem;

/// <summary>
/// Cache merging (SLUB's find_mergeable/__kmem_cache_alias): a new cache whose objects
/// would be laid out like an existing cache's becomes an alias of it, sharing its slabs,
/// sheaves and barn, so similar caches do not each keep partly empty slabs.
/// </summary>
/// <remarks>
/// An alias is a SlabCache of its own (its name, its Dispose) whose fast path reads the
/// same sheaf table as its root: the root writes every new table to its aliases under the
/// sheaf-table lock, so aliases cost the fast path nothing. Slow paths forward to the root.
/// The root lives while any handle does: disposing the root's own handle while aliases
/// remain only drops its reference (as kmem_cache_destroy does on a merged cache), so use
/// of that handle afterwards is not detected until the last alias goes; pass
/// <see cref="SlabFlags.NoMerge"/> where that matters. Live objects are counted per root,
/// so Dispose reports them when the last handle goes.
/// </remarks>
public sealed unsafe partial class SlabCache
{
    /// <summary>Flags that forbid merging (SLAB_NEVER_MERGE): debug, RCU and explicit NoMerge.</summary>
    private const SlabFlags NeverMerge = SlabFlags.NoMerge | SlabFlags.ConsistencyChecks | SlabFlags.TypesafeByRcu
        | SlabFlags.RedZone | SlabFlags.Poison | SlabFlags.StoreUser;

    /// <summary>Flags two caches must agree on to merge (SLAB_MERGE_SAME).</summary>
    private const SlabFlags MergeSame = SlabFlags.Account | SlabFlags.RandomizeFreelist;

    /// <summary>An alias of <paramref name="root"/>: shares its layout, index, barn and sheaves.</summary>
    private SlabCache(SlabCache root, string name, int objectSize, SlabCacheOptions options)
    {
        _root = root;
        Name = name;
        ObjectSize = objectSize;
        Flags = options.Flags;
        Align = root.Align;
        _layout = root._layout;
        _account = root._account;
        _hooks = root._hooks;
        _groupOffset = root._groupOffset;
        _usable = root._usable;
        _span = root._span;
        _index = root._index;
        _minEmptySlabs = root._minEmptySlabs;
        SheafCapacity = root.SheafCapacity;
        _barn = root._barn;
        _sheafTable = root._sheafTable;
        _drainLock = root._drainLock;
        _listLock = root._listLock;
        _sheafReader = PublishSheaves;
    }

    /// <summary>The cache this one is merged into, or null for a cache of its own.</summary>
    public string? MergedInto => _root != this ? _root.Name : null;

    /// <summary>Names of the caches merged into this one (empty for an alias or an unmerged cache).</summary>
    public IReadOnlyList<string> AliasNames
    {
        get
        {
            using (SlabCacheRegistry.Lock.Scope())
                return [.. _aliases.Select(a => a.Name)];
        }
    }

    private static bool IsMergeable(SlabCacheOptions options) =>
        !options.HasConstructor && !options.HasDestructor && (options.Flags & NeverMerge) == 0;

    private static SlabCache CreateOrMerge(string name, int objectSize, SlabCacheOptions options)
    {
        using (SlabCacheRegistry.Lock.Scope())
        {
            if (IsMergeable(options) && FindMergeable(objectSize, options) is { } root)
                return root.AddAlias(name, objectSize, options);
            var cache = new SlabCache(name, objectSize, options);
            return cache;
        }
    }

    /// <summary>
    /// find_mergeable(): a root whose stride holds the object at an alignment it already
    /// honours, wasting less than a pointer per object, with the same must-match flags.
    /// </summary>
    private static SlabCache? FindMergeable(int objectSize, SlabCacheOptions options)
    {
        int align = EffectiveAlign(objectSize, options);
        int size = Slab.SlabLayout.AlignUp(Math.Max(objectSize, sizeof(void*)), align);
        foreach (SlabCache s in SlabCacheRegistry.RootsLocked().Reverse())
        {
            if (s._disposed || !s._rootHandleLive && s._aliases.Count == 0 || (s.Flags & NeverMerge) != 0 || s._lifecycle)
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

    /// <summary>A new alias of this root. Caller holds slab_mutex.</summary>
    private SlabCache AddAlias(string name, int objectSize, SlabCacheOptions options)
    {
        var alias = new SlabCache(this, name, objectSize, options);
        _sheafTable.AddReader(alias._sheafReader);
        _aliases.Add(alias);
        _refs++;
        return alias;
    }

    /// <summary>
    /// Drops an alias; the last handle of a root destroys it (strict: refusing with live
    /// objects, and then nothing changes). The alias's table is emptied, so its every call
    /// goes to the slow path, which reports the disposal. Caller holds slab_mutex.
    /// </summary>
    private bool DisposeAlias(bool strict, out IReadOnlyList<nint> liveObjects)
    {
        liveObjects = [];
        if (_disposed)
            return true;
        SlabCache root = _root;
        if (root._refs == 1 && !root.DestroyCore(strict, out liveObjects))
            return false;
        _disposed = true;
        if (!root._disposed)
            root._sheafTable.RemoveReader(_sheafReader);
        root._aliases.Remove(this);
        root._refs--;
        return true;
    }
}
