using System.Runtime.CompilerServices;
using Kmem.Slab;

namespace Kmem;

/// <summary>
/// <see cref="SlabFlags.Account"/>: each object is charged to the allocating thread's
/// <see cref="MemoryGroup"/> (memcg_slab_post_alloc_hook) and uncharged from the group it
/// was charged to when freed, whichever thread frees it. The group's id is kept after
/// the object, where the object's user cannot overwrite it.
/// </summary>
public sealed unsafe partial class SlabCache
{
    private readonly bool _account;
    /// <summary>Account caches: offset in the slot of the charged group's id (0: none); -1 otherwise.</summary>
    private readonly int _groupOffset;

    /// <summary>Charges a new object to the current group; over a limit the object goes back and the allocation fails.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void* ChargeObject(void* obj, bool throwOnFailure)
    {
        int* id = (int*)((byte*)obj + _groupOffset);
        MemoryGroup? group = MemoryGroup.Current;
        if (group == null || group == MemoryGroup.Root)
        {
            *id = 0;
            return obj;
        }
        if (group.TryCharge(_layout.Stride, out MemoryGroup? refusedBy))
        {
            *id = group.Online().Id;
            return obj;
        }
        *id = 0;
        FreeInSlab(obj, PageLayer.PageMap.Lookup(obj));
        if (throwOnFailure)
        {
            throw new SlabAllocationException(Name, AllocationFailure.GroupLimit, (nuint)ObjectSize,
                $"memory group '{refusedBy!.Name}' would pass its limit of {refusedBy.Limit} bytes (usage {refusedBy.Usage})");
        }
        return null;
    }

    /// <summary>Uncharges an object being freed (after checking it is one), and forgets its group so that a double free uncharges nothing.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void UnchargeObject(void* obj, SlabHeader* slab)
    {
        CheckObjectStart(obj, slab);
        int* slot = (int*)((byte*)obj + _groupOffset);
        int id = *slot;
        if (id == 0)
            return;
        *slot = 0;
        MemoryGroup.FromId(id).Uncharge(_layout.Stride);
    }
}
