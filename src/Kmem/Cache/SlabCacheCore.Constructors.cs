using System.Buffers;
using System.Runtime.CompilerServices;
using Kmem.Diagnostics;
using Kmem.Locking;
using Kmem.Slab;

namespace Kmem;

/// <summary>
/// Constructors and destructors (the seed series, patches 2-3): the constructor runs on
/// every object when its slab is created, the destructor when the slab is freed, so an
/// object keeps what its constructor built across any number of Alloc/Free cycles.
/// </summary>
/// <remarks>
/// Invariants: a slab's <see cref="SlabHeader.Constructed"/> objects, counted along its
/// first free list, are exactly those constructed; <see cref="Destruct"/> runs once per
/// slab, from <see cref="FreeSlabs"/> only, which runs only on the reclaim thread, inside
/// Shrink/Dispose, or in the allocation whose constructor failed, never in Free. So over a cache's life
/// DestructorCalls == ConstructorCalls - ConstructorFailures once every slab is gone.
/// </remarks>
internal sealed unsafe partial class SlabCacheCore
{
    /// <summary>True when the cache has a constructor or a destructor.</summary>
    public bool HasLifecycle => _lifecycle;

    /// <summary>
    /// Runs the constructor on every object of a fresh slab (not yet published), in
    /// free-list order. Returns how many were built; <paramref name="thrown"/> is what
    /// the constructor threw, if it did.
    /// </summary>
    private int Construct(SlabHeader* slab, out Exception? thrown)
    {
        thrown = null;
        int n = _layout.Objects;
        if (_ctor == null && _batchCtor == null)
            return n;
        int built = 0;
        long calls = 0;
        LockValidator.Region region = LockValidator.EnterRegion($"constructor of cache '{Name}'", leafOnly: false, owner: this);
        try
        {
            if (_batchCtor != null)
            {
                nint[] objects = ArrayPool<nint>.Shared.Rent(n);
                try
                {
                    CollectFreeList(slab, objects, n);
                    calls = n;
                    int reported = _batchCtor(new ReadOnlySpan<nint>(objects, 0, n));
                    if (reported < 0 || reported > n)
                    {
                        thrown = new InvalidOperationException($"cache '{Name}': BatchConstructor reported {reported} objects built of {n}; treated as 0");
                        reported = 0;
                    }
                    built = reported;
                    calls = built < n ? built + 1 : n;
                }
                finally
                {
                    ArrayPool<nint>.Shared.Return(objects);
                }
            }
            else
            {
                for (void* o = slab->Freelist; o != null; o = *LinkOf(o))
                {
                    calls++;
                    if (!_ctor!(o))
                        break;
                    built++;
                }
            }
        }
        catch (Exception e)
        {
            thrown = e;
        }
        finally
        {
            LockValidator.ExitRegion(region);
        }
        Interlocked.Add(ref _ctorCalls, calls);
        if (built < n)
            Interlocked.Increment(ref _ctorFailures);
        return built;
    }

    /// <summary>
    /// Runs the destructor on the constructed objects of a slab that is off every list
    /// and about to be freed, inside a leaf-only region. Every object is destructed even
    /// if one call throws; the first exception is returned.
    /// </summary>
    private Exception? Destruct(SlabHeader* slab)
    {
        int k = slab->Constructed;
        if (k == 0 || (_dtor == null && _batchDtor == null))
            return null;
        Exception? first = null;
        // On a reclaim worker, every call is watched (Diagnostics/Watchdog.cs): a few stores per call.
        CallbackWatch? watch = CallbackWatch.t_current;
        string holding = watch == null ? "" : $"sheaf_drain of cache '{Name}'";
        nint[] objects = ArrayPool<nint>.Shared.Rent(k);
        LockValidator.Region region = LockValidator.EnterRegion($"destructor of cache '{Name}'", leafOnly: true, owner: this);
        try
        {
            CollectConstructed(slab, objects, k);
            if (_batchDtor != null)
            {
                watch?.Enter(CallbackKind.Destructor, Name, this, objects[0], k, holding);
                try
                {
                    _batchDtor(new ReadOnlySpan<nint>(objects, 0, k));
                }
                catch (Exception e)
                {
                    first = e;
                }
                watch?.Exit();
            }
            else
            {
                for (int i = 0; i < k; i++)
                {
                    watch?.Enter(CallbackKind.Destructor, Name, this, objects[i], 1, holding);
                    try
                    {
                        _dtor!((void*)objects[i]);
                    }
                    catch (Exception e)
                    {
                        first ??= e;
                    }
                    watch?.Exit();
                }
            }
        }
        finally
        {
            LockValidator.ExitRegion(region);
            ArrayPool<nint>.Shared.Return(objects);
        }
        Interlocked.Add(ref _dtorCalls, k);
        return first;
    }

    /// <summary>
    /// The <paramref name="count"/> constructed objects of a slab being freed. All of them
    /// (a published slab): by address, not along the free list, which a write after free
    /// may have cut short (a link to another free object of the slab passes every check
    /// and strands the objects it skips). Fewer (a construction that failed, never
    /// published, its free list as built): the first ones along the free list.
    /// </summary>
    private void CollectConstructed(SlabHeader* slab, nint[] into, int count)
    {
        if (count == _layout.Objects)
        {
            byte* first = (byte*)slab + _layout.ObjectOffset;
            for (int i = 0; i < count; i++)
                into[i] = (nint)(first + i * _layout.Stride);
            return;
        }
        CollectFreeList(slab, into, count);
    }

    /// <summary>The first <paramref name="count"/> objects of the slab's free list (the construction order).</summary>
    private void CollectFreeList(SlabHeader* slab, nint[] into, int count)
    {
        void* o = slab->Freelist;
        for (int i = 0; i < count; i++, o = *LinkOf(o))
        {
            System.Diagnostics.Debug.Assert(o != null, "free list shorter than the objects it should hold");
            into[i] = (nint)o;
        }
    }

    /// <summary>
    /// A constructor that allocates from its own cache would recurse without end (each new
    /// slab constructs again); a destructor that does would take list_lock inside the
    /// leaf-only region. Both are refused with a report naming the cache.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void CheckNotInOwnLifecycle()
    {
        LockValidator.Region? region = LockValidator.FindRegion(this);
        if (region == null)
            return;
        LockValidator.Report(region.LeafOnly
            ? $"cache '{Name}' allocated from inside its own destructor: that takes its list_lock inside the leaf-only region"
            : $"cache '{Name}' allocated from inside its own constructor: each new slab would construct again without end",
            region.Description, $"list_lock of cache '{Name}'");
    }

    /// <summary>
    /// <see cref="Diagnostics.LifecycleCheck"/>: constructs a fresh slab (off every list,
    /// holding no lock, as an allocation does) and frees it at once (under sheaf_drain, as
    /// reclaim does). Returns what the constructor or destructor threw, or the failure.
    /// </summary>
    internal Exception? PopulateAndReclaimOneSlab(out int objects)
    {
        objects = _layout.Objects;
        if (_disposed)
            return null;
        SlabHeader* slab = NewSlab(out AllocationFailure failure, out Exception? thrown);
        if (slab == null)
            return thrown ?? new SlabAllocationException(Name, failure, (nuint)ObjectSize);
        slab->Next = null;
        using (_drainLock.Scope())
            return FreeSlabs(slab, SlabFreedBy.Shrink, out _);
    }
}
