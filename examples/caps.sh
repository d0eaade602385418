hardexec caps                            # every capability, its number and what it allows
hardexec caps --decode 0000000000003000  # NET_ADMIN,NET_RAW
