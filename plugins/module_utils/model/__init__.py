"""Layer ``model``: errors, addressing, domain matching, the validation of
every user input, and the data the other layers pass around. Pure: nothing
here touches the kernel or the disk, and it imports no other layer.

Private to the collection ``vmsan.network`` (see the package above).
"""
