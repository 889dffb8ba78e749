# Draft NetworkManager-ci scenarios for the "link-up" dispatcher action, to
# append to NetworkManager-ci's features/scenarios/dispatcher.feature.
#
# Written against NetworkManager-ci commit d45e879: every step line matches an
# existing step definition there (features/steps/*.py). Never run: it needs
# NetworkManager-ci's own test machine. The log strings match the series
# ('IP configuration waits for "link-up" dispatcher scripts', the <warn>
# 'did not complete within 5000 ms'); the series reads link-up.d at each
# activation (no NM restart needed) and an empty link-up.d counts as no script.
# The same behaviours run in this repository's lab: tests/patched.rs.
# To submit: new entries in mapper.yaml, then update_tests_fmf.py; set the
# @ver+= tag to the version the series lands in.

    @ver+=1.59.2
    @permissive @disp
    @dispatcher_link_up_and_up
    Scenario: NM - dispatcher - link-up and up
    * Write dispatcher "link-up.d/98-disp" file
    * Write dispatcher "99-disp" file with params "if [ "$2" == "up" ]; then sleep 15; fi"
    * Bring "up" connection "testeth1"
    Then "link-up" is visible with command "cat /tmp/dispatcher.txt"
    Then "link-up.*\s+up" is not visible with command "cat /tmp/dispatcher.txt"
    Then "link-up.*\s+up" is visible with command "cat /tmp/dispatcher.txt" in "50" seconds


    @ver+=1.59.2
    @permissive @disp
    @dispatcher_link_up_delays_dhcp
    Scenario: NM - dispatcher - link-up - IP configuration waits for the scripts
    * Prepare simulated test "testX" device
    * Write dispatcher "link-up.d/98-disp" file with params
          """
          if [ "$2" == "link-up" ]; then
              sleep 3
              logger -t nmci "link-up script for $1 finished"
          fi
          """
    * Add "ethernet" connection named "con_ipv4" for device "testX" with options
          """
          autoconnect no
          ipv6.method disabled
          """
    * Start following journal
    * Note the output of "date +%s%3N" as value "t_start"
    * Bring "up" connection "con_ipv4"
    * Note the output of "date +%s%3N" as value "t_end"
    * Commentary
      """
      The three messages must appear in this order: NM starts waiting for the
      link-up scripts, the script finishes and only then the DHCP transaction begins.
      """
    Then "IP configuration waits for "link-up" dispatcher scripts" is visible in journal in "10" seconds
    Then "link-up script for testX finished" is visible in journal in "10" seconds
    Then "dhcp4 \(testX\): activation: beginning transaction" is visible in journal in "10" seconds
    Then Check noted value "t_end" difference from "t_start" is "at least" "3000"
    Then "192.168.99" is visible with command "ip -4 addr show dev testX"
    Then "link-up" is visible with command "cat /tmp/dispatcher.txt"
    * Note NM log
    Then Noted value does not contain "did not complete within 5000 ms"


    @ver+=1.59.2
    @permissive @disp
    @dispatcher_link_up_timeout
    Scenario: NM - dispatcher - link-up - IP configuration waits at most 5 seconds
    * Prepare simulated test "testX" device
    * Write dispatcher "link-up.d/98-disp" file with params
          """
          if [ "$2" == "link-up" ]; then
              sleep 30
              logger -t nmci "link-up script for $1 finished"
          fi
          """
    * Add "ethernet" connection named "con_ipv4" for device "testX" with options
          """
          autoconnect no
          ipv6.method disabled
          """
    * Start following journal
    * Note the output of "date +%s%3N" as value "t_start"
    * Bring "up" connection "con_ipv4"
    * Note the output of "date +%s%3N" as value "t_end"
    Then "IP configuration waits for "link-up" dispatcher scripts" is visible in journal in "10" seconds
    Then "<warn>.*did not complete within 5000 ms" is visible in journal in "10" seconds
    Then "dhcp4 \(testX\): activation: beginning transaction" is visible in journal in "10" seconds
    Then Check noted value "t_end" difference from "t_start" is "at least" "5000"
    Then Check noted value "t_end" difference from "t_start" is "less than" "20000"
    Then "192.168.99" is visible with command "ip -4 addr show dev testX"
    Then "link-up" is not visible with command "cat /tmp/dispatcher.txt"
    * Commentary
      """
      NM stopped waiting, but the script itself is not killed; wait for it to
      finish (after DHCP already started) so it does not outlive the scenario.
      """
    Then "link-up script for testX finished" is visible in journal in "40" seconds
    Then "link-up" is visible with command "cat /tmp/dispatcher.txt" in "10" seconds


    @ver+=1.59.2
    @permissive @disp
    @dispatcher_link_up_no_scripts
    Scenario: NM - dispatcher - link-up is not dispatched without link-up.d scripts
    * Write dispatcher "99-disp" file
    * "\S" is not visible with command "find /etc/NetworkManager/dispatcher.d/link-up.d /usr/lib/NetworkManager/dispatcher.d/link-up.d ! -type d 2>/dev/null"
    * Start following journal
    * Bring "up" connection "testeth1"
    Then "\(eth1\) dispatching action 'up'" is visible in journal in "10" seconds
    Then "up" is visible with command "cat /tmp/dispatcher.txt" in "10" seconds
    * Note NM log
    Then Noted value contains "\(eth1\) dispatching action 'up'"
     And Noted value does not contain "dispatching action 'link-up'"
     And Noted value does not contain "IP configuration waits for "link-up" dispatcher scripts"
     And "link-up" is not visible with command "cat /tmp/dispatcher.txt"


    @ver+=1.59.2
    @permissive @disp
    @dispatcher_link_up_down_on_failed_activation
    Scenario: NM - dispatcher - link-up and down when activation fails
    * Prepare simulated test "testX" device without DHCP
    * Write dispatcher "link-up.d/98-disp" file
    * Write dispatcher "99-disp" file
    * Add "ethernet" connection named "con_ipv4" for device "testX" with options
          """
          autoconnect no
          ipv4.method auto
          ipv4.dhcp-timeout 10
          ipv4.may-fail no
          ipv6.method disabled
          """
    Then Fail up connection "con_ipv4" in "30" seconds
    Then "link-up.*\s+down" is visible with command "cat /tmp/dispatcher.txt" in "10" seconds
     And "^up$" is not visible with command "cat /tmp/dispatcher.txt"
     And "activated" is not visible with command "nmcli -g GENERAL.STATE con show con_ipv4"


    @ver+=1.59.2
    @permissive @disp
    @dispatcher_link_up_not_for_bridge_port
    Scenario: NM - dispatcher - link-up is not dispatched for bridge ports
    * Prepare simulated test "testX" device
    * Write dispatcher "link-up.d/98-disp" file with params "echo -n "$1 " >> /tmp/dispatcher.txt"
    * Write dispatcher "99-disp" file with params "echo -n "$1 " >> /tmp/dispatcher.txt"
    * Add "bridge" connection named "brX" for device "brX" with options
          """
          autoconnect no
          bridge.stp off
          ipv6.method disabled
          """
    * Add "ethernet" connection named "brX-port" for device "testX" with options
          """
          autoconnect no
          master brX
          """
    * Bring "up" connection "brX-port"
    Then "192.168.99" is visible with command "ip -4 addr show dev brX" in "45" seconds
    Then "testX up" is visible with command "cat /tmp/dispatcher.txt" in "10" seconds
     And "brX link-up.*\s+brX up" is visible with command "cat /tmp/dispatcher.txt" in "10" seconds
     And "testX link-up" is not visible with command "cat /tmp/dispatcher.txt"
