"""Replica disks on the receiver: raw images with the source's partition tables, file
systems and LVM, attached to loop devices and mounted so file-level sync writes into them."""
